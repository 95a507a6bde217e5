"""The browser page's JavaScript against the Python package: ``web/crop.js`` cuts the same
mesh-aligned crops as :func:`meshfer.crops.align_crop` on real images (run in Node, which the page's
modules also run in; skipped where Node is missing)."""

from __future__ import annotations

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
