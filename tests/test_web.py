"""The browser page's JavaScript against the Python package: ``web/crop.js`` cuts the same
mesh-aligned crops as :func:`meshfer.crops.align_crop` on real images (run in Node, which the page's
modules also run in; skipped where Node is missing)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import FER_VAL, LANDMARKER, PHOTOS, REPO, sample_images

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the page's modules run in Node here)")

_RUNNER = """
import { alignCrop } from %s;
import fs from 'fs';
const cases = JSON.parse(fs.readFileSync(process.argv[1]));
const out = cases.map((c) => {
  const rgba = new Uint8Array(fs.readFileSync(c.pixels));
  return Array.from(alignCrop(rgba, c.width, c.height, c.landmarks));
});
fs.writeFileSync(process.argv[2], JSON.stringify(out));
"""


def test_crop_js_equals_python(tmp_path: Path) -> None:
    from meshfer.crops import align_crop
    from meshfer.landmarks import FaceLandmarker, LandmarkerOptions

    # Photos of every size (large faces take the area-shrink path), FER-2013's 48x48 faces (a plain
    # warp of the whole image) and a photo scaled up 3x (a whole factor of 5 or more).
    images = [p for files in sample_images(PHOTOS, 4).values() for p in files]
    images += [p for files in sample_images(FER_VAL, 2).values() for p in files]
    arrays = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in images]
    arrays.append(cv2.resize(arrays[0], None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))
    cases, expected = [], []
    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER)) as lm:
        for i, rgb in enumerate(arrays):
            faces = lm.detect(rgb)
            if not faces:
                continue
            h, w = rgb.shape[:2]
            pixels = tmp_path / f"{i}.rgba"
            pixels.write_bytes(np.dstack([rgb, np.full((h, w), 255, np.uint8)]).tobytes())
            landmarks = faces[0].landmarks.astype(np.float32)
            cases.append({"pixels": str(pixels), "width": w, "height": h, "landmarks": landmarks.ravel().tolist()})
            expected.append(align_crop(rgb, landmarks))
    assert len(cases) >= 30
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    module = json.dumps((REPO / "web" / "crop.js").as_uri())
    proc = subprocess.run([NODE, "--input-type=module", "-e", _RUNNER % module, str(tmp_path / "cases.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = [np.array(c, np.uint8).reshape(48, 48) for c in json.loads((tmp_path / "out.json").read_text())]
    diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(got, expected)]
    # OpenCV 5's arithmetic reproduced: nearly every crop the same bytes, none off by more than a grey level
    assert max(int(d.max()) for d in diffs) <= 1
    assert np.mean([d.max() == 0 for d in diffs]) >= 0.9 and np.mean([d.mean() for d in diffs]) < 0.001


_STREAM_RUNNER = """
import { Stream, formatSummary } from %s;
import fs from 'fs';
const { config, frames } = JSON.parse(fs.readFileSync(process.argv[1]));
const stream = new Stream(config);
const records = frames.map(([t, outputs]) => stream.push(t, outputs));
const summary = stream.summary(12.5, false);
fs.writeFileSync(process.argv[2], JSON.stringify({ records, summary, text: formatSummary(summary) }));
"""


def _random_frames(rng: np.random.Generator, n: int) -> list[tuple[float, dict | None]]:
    """A stream of model outputs with runs of closed eyes, mouth flapping, gaze wandering and lost faces."""
    frames, t = [], 0.0
    eye_closed = mouth_open = False
    for _ in range(n):
        t += 1 / 30 + rng.uniform(0, 0.004)
        if rng.random() < 0.04:
            frames.append((t, None))
            continue
        if rng.random() < (0.5 if eye_closed else 0.1):
            eye_closed = not eye_closed
        if rng.random() < 0.25:
            mouth_open = not mouth_open
        eye = rng.dirichlet(np.ones(4), size=2)
        eye[:, 0] += 3.0 * eye_closed
        expression = rng.dirichlet(np.ones(7) * 0.5)
        mouth = np.array([1.0 - mouth_open, float(mouth_open)]) * 0.8 + rng.dirichlet([1, 1]) * 0.2
        frames.append((t, {"expression": expression.tolist(), "eye": (eye / eye.sum(1, keepdims=True)).tolist(),
                           "gaze": rng.uniform(-0.7, 0.7, 2).tolist(), "mouth": mouth.tolist()}))
    return frames


def test_temporal_js_equals_python(tmp_path: Path) -> None:
    """web/temporal.js's Stream and summary against meshfer.video.VideoAnalyzer.push and
    meshfer.temporal.summarize on the same model outputs (the page's config as the server sends it)."""
    from meshfer.landmarks import LandmarkerOptions
    from meshfer.video import VideoAnalyzer
    from meshfer.web import page_config

    config = page_config()
    frames = _random_frames(np.random.default_rng(7), 900)
    with VideoAnalyzer(options=LandmarkerOptions(model_path=LANDMARKER)) as analyzer:
        records = [analyzer.push(t, None if o is None else {k: np.asarray(v)[None] for k, v in o.items()}) for t, o in frames]
        summary = analyzer.summary(processing_fps=12.5)
    (tmp_path / "in.json").write_text(json.dumps({"config": config, "frames": frames}))
    module = json.dumps((REPO / "web" / "temporal.js").as_uri())
    proc = subprocess.run([NODE, "--input-type=module", "-e", _STREAM_RUNNER % module, str(tmp_path / "in.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert summary.blinks and summary.speaking_spans and 0 < summary.attention < 1  # the stream exercises every measure
    assert len(out["records"]) == len(records)
    for mine, theirs in zip(out["records"], records):
        want = dataclasses.asdict(theirs)
        assert _same(mine, want), (mine, want)
    assert _same(out["summary"], summary.to_dict())
    assert out["text"] == summary.format()


def _same(a: object, b: object, tol: float = 1e-9) -> bool:
    """JSON from JavaScript equals Python's values: the same keys and labels, numbers within ``tol``."""
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in b)
    if isinstance(b, (list, tuple)):
        return isinstance(a, list) and len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    if isinstance(b, float) and not isinstance(a, bool) and isinstance(a, (int, float)):
        return (np.isnan(b) and a != a) or abs(a - b) <= tol
    return a == b and type(a) is type(b) if isinstance(b, bool) or b is None else a == b
