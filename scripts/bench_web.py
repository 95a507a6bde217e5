"""Frames per second of the browser page in headless Chromium: MediaPipe's Face Landmarker for the web alone,
and with the crop and the fused graph (onnxruntime-web), in VIDEO mode on a clip of real photos.

Feeds: docs/web.md (Speed).

    python scripts/bench_web.py $MESHFER_SHARED/datasets/muxspace-dev [--frames 120] [--rounds 5] [--threads 1 2]

The clip (640x480 frames, each photo held for 10 frames) is decoded before timing; the two loops alternate,
round after round, and the medians are printed. Uses Debian's chromium (or $MESHFER_CHROMIUM) through
Playwright, and the page's npm packages (npm ci in web/)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
from pathlib import Path

import cv2
import numpy as np

_LOOP = """
async ([count, rounds]) => {
  const p = window.meshfer.pipeline;
  const first = !window.benchFrames;
  if (first) {
    window.benchFrames = [];
    for (let i = 0; i < count; i++) window.benchFrames.push(await createImageBitmap(await (await fetch(`bench/${i}.jpg`)).blob()));
    window.benchTs = 0;
  }
  const bitmaps = window.benchFrames;
  const pass = async (models) => {
    const times = { landmarker: 0, crop_models: 0 };
    let faces = 0;
    const t0 = performance.now();
    for (const b of bitmaps) {
      const a = performance.now();
      const px = p.pixels(b, b.width, b.height);
      const found = await p.detectVideo(px, ++window.benchTs);
      const m = performance.now();
      times.landmarker += m - a;
      if (found.length) faces += 1;
      if (models && found.length) { await p.run(found[0], px); times.crop_models += performance.now() - m; }
    }
    const s = (performance.now() - t0) / 1000;
    return { fps: bitmaps.length / s, landmarker_ms: times.landmarker / bitmaps.length,
             crop_models_ms: times.crop_models / bitmaps.length, faces };
  };
  if (first) await pass(true);  // warm-up: graphs built, WASM compiled
  const out = [];
  for (let r = 0; r < rounds; r++) out.push({ alone: await pass(false), models: await pass(true) });
  return out;
}
"""


def _clip(photos: Path, frames: int, hold: int = 10) -> list[bytes]:
    files = sorted(p for p in photos.glob("face_*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    picks = files[:: max(1, len(files) // max(1, frames // hold))][: max(1, frames // hold)]
    out = []
    for path in picks:
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        s = min(640 / w, 480 / h)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        frame = np.zeros((480, 640, 3), np.uint8)
        y, x = (480 - img.shape[0]) // 2, (640 - img.shape[1]) // 2
        frame[y : y + img.shape[0], x : x + img.shape[1]] = img
        data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        out += [data] * hold
    return out[:frames]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="a folder of face_<label> photo folders")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="onnxruntime-web threads to compare")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from meshfer.web import PageServer

    chromium = os.environ.get("MESHFER_CHROMIUM") or shutil.which("chromium")
    clip = _clip(args.photos, args.frames)
    rounds: dict[int, list] = {t: [] for t in args.threads}
    with PageServer(0) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        pages = {}
        for t in args.threads:
            page = pages[t] = browser.new_page()
            page.route("**/bench/*.jpg", lambda route: route.fulfill(
                body=clip[int(route.request.url.rsplit("/", 1)[1].split(".")[0])], content_type="image/jpeg"))
            page.goto(f"{server.url}?threads={t}")
            page.evaluate("window.meshfer.ready")
            assert page.evaluate("window.meshfer.pipeline.threads") == t, "the page is not cross-origin isolated"
        for _ in range(args.rounds):  # thread counts alternated, round after round
            for t, page in pages.items():
                rounds[t] += page.evaluate(_LOOP, [len(clip), 1])
        version = browser.version
        browser.close()
    print(f"headless Chromium {version} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{len(clip)} frames of 640x480, VIDEO mode; medians of {args.rounds} alternated rounds")
    for t, runs in rounds.items():
        med = lambda kind, key: statistics.median(r[kind][key] for r in runs)  # noqa: E731
        alone, models = med("alone", "fps"), med("models", "fps")
        print(f"onnxruntime-web on {t} thread{'s' if t > 1 else ''}:")
        print(f"  landmarker alone:           {alone:6.1f} fps  (landmarker {med('alone', 'landmarker_ms'):.1f} ms per frame)")
        print(f"  landmarker + crop + graph:  {models:6.1f} fps  (landmarker {med('models', 'landmarker_ms'):.1f} ms, "
              f"crop + graph {med('models', 'crop_models_ms'):.1f} ms per frame)")
        print(f"  with the models / alone:    {models / alone:.2f}x; faces found in {runs[0]['models']['faces']}/{len(clip)} frames")
    print(json.dumps(rounds))


if __name__ == "__main__":
    main()
