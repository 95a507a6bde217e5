"""Frames per second of the browser page in headless Chromium: MediaPipe's Face Landmarker for the web alone,
and with the crop and the fused graph (onnxruntime-web), in VIDEO mode on a clip of real photos.

Feeds: docs/web.md (Speed).

    python scripts/bench_web.py $MESHFER_SHARED/datasets/muxspace-dev [--frames 120] [--rounds 5] [--configs ...]

The clip (640x480 frames, each photo held for 10 frames) is decoded before timing; the landmarker alone and the
whole pipeline (meshfer's VideoRunner: pipelined when the graph runs in its worker) alternate, in each page setting,
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
async ([count]) => {
  const p = window.meshfer.pipeline;
  const { VideoRunner } = await import('./pipeline.js');
  const first = !window.benchFrames;
  if (first) {
    window.benchFrames = [];
    for (let i = 0; i < count; i++) window.benchFrames.push(await createImageBitmap(await (await fetch(`bench/${i}.jpg`)).blob()));
    window.benchTs = 0;
  }
  const bitmaps = window.benchFrames;
  const pass = async (models) => {
    const sums = { landmarker: 0, crop: 0, graph: 0 };
    let faces = 0;
    const runner = new VideoRunner(p);
    const done = (f) => { if (f) { faces += f.outputs ? 1 : 0; sums.landmarker += f.landmarkerMs; sums.crop += f.cropMs; sums.graph += f.graphMs; } };
    const t0 = performance.now();
    for (const b of bitmaps) {
      if (models) done(await runner.push(b, b.width, b.height, ++window.benchTs));
      else {
        const a = performance.now();
        if ((await p.detectVideo(p.pixels(b, b.width, b.height), ++window.benchTs)).length) faces += 1;
        sums.landmarker += performance.now() - a;
      }
    }
    done(await runner.flush());
    const n = bitmaps.length;
    return { fps: n / ((performance.now() - t0) / 1000), landmarker_ms: sums.landmarker / n, crop_ms: sums.crop / n,
             graph_ms: sums.graph / n, faces };
  };
  if (first) await pass(true);  // warm-up: graphs built, WASM compiled
  return [{ alone: await pass(false), models: await pass(true) }];
}
"""

#: Page settings compared (URL queries): the graph in a worker beside the landmarker (the page's default,
#: threads: the cores it leaves), or in the page's thread on 2 threads or 1.
CONFIGS = {"worker": "", "in-page, 2 threads": "?worker=0&threads=2", "in-page, 1 thread": "?worker=0&threads=1"}


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
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="page settings to compare")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from meshfer.web import PageServer

    chromium = os.environ.get("MESHFER_CHROMIUM") or shutil.which("chromium")
    clip = _clip(args.photos, args.frames)
    rounds: dict[str, list] = {c: [] for c in args.configs}
    with PageServer(0) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        pages = {}
        for name in args.configs:
            page = pages[name] = browser.new_page()
            page.route("**/bench/*.jpg", lambda route: route.fulfill(
                body=clip[int(route.request.url.rsplit("/", 1)[1].split(".")[0])], content_type="image/jpeg"))
            page.goto(server.url + CONFIGS[name])
            page.evaluate("window.meshfer.ready")
        threads = {name: page.evaluate("window.meshfer.pipeline.threads") for name, page in pages.items()}
        for _ in range(args.rounds):  # the settings alternated, round after round
            for name, page in pages.items():
                rounds[name] += page.evaluate(_LOOP, [len(clip)])
        version = browser.version
        browser.close()
    print(f"headless Chromium {version} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{len(clip)} frames of 640x480, VIDEO mode; medians of {args.rounds} alternated rounds")
    for name, runs in rounds.items():
        med = lambda kind, key: statistics.median(r[kind][key] for r in runs)  # noqa: E731
        alone, models = med("alone", "fps"), med("models", "fps")
        print(f"graph {name} (onnxruntime-web on {threads[name]} thread{'s' if threads[name] > 1 else ''}):")
        print(f"  landmarker alone:           {alone:6.1f} fps  (landmarker {med('alone', 'landmarker_ms'):.1f} ms per frame)")
        print(f"  landmarker + crop + graph:  {models:6.1f} fps  (landmarker {med('models', 'landmarker_ms'):.1f} ms, "
              f"crop {med('models', 'crop_ms'):.1f} ms, graph {med('models', 'graph_ms'):.1f} ms per frame)")
        ratios = sorted(r["models"]["fps"] / r["alone"]["fps"] for r in runs)
        print(f"  with the models / alone:    {statistics.median(ratios):.2f}x (median of the rounds' own ratios; "
              f"{ratios[0]:.2f}-{ratios[-1]:.2f}); faces found in {runs[0]['models']['faces']}/{len(clip)} frames")
    print(json.dumps(rounds))


if __name__ == "__main__":
    main()
