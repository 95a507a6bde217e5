"""The FaceLandmarker wrapper on real images with the real MediaPipe model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FER_VAL, LANDMARKER, PHOTOS, REPO, sample_images
from meshfer.landmarks import (
    BLENDSHAPE_NAMES,
    DEFAULT_ATTEMPTS,
    Attempt,
    FaceLandmarker,
    FaceMesh,
    LandmarkerOptions,
    RunningMode,
)

#: FER-2013 validation images that the detector misses as they are and finds after padding
#: (found by the extraction of the whole validation split).
NEEDS_FALLBACK = ["face_angry/PublicTest_12919755.jpg", "face_angry/PublicTest_15411158.jpg"]


@pytest.mark.parametrize("root", [PHOTOS, FER_VAL], ids=["photos", "fer2013"])
def test_meshes_for_a_few_images_per_class(landmarker: FaceLandmarker, root: Path) -> None:
    found = 0
    for label, files in sample_images(root, 2).items():
        for path in files:
            faces = landmarker.detect(path)
            assert len(faces) <= 1
            if not faces:
                continue
            found += 1
            mesh = faces[0]
            assert isinstance(mesh, FaceMesh)
            assert mesh.landmarks.shape == (478, 3) and mesh.landmarks.dtype == np.float32
            assert mesh.blendshapes.shape == (52,) and np.all((mesh.blendshapes >= 0) & (mesh.blendshapes <= 1))
            assert mesh.transform.shape == (4, 4) and np.allclose(mesh.transform[3], [0, 0, 0, 1], atol=1e-5)
            assert mesh.attempt in {a.name for a in DEFAULT_ATTEMPTS}
            # the face lies (mostly) inside the image, in normalised coordinates
            assert 0.0 < np.median(mesh.landmarks[:, 0]) < 1.0 and 0.0 < np.median(mesh.landmarks[:, 1]) < 1.0
            assert set(mesh.blendshape_scores) == set(BLENDSHAPE_NAMES)
            assert mesh.blendshape("jawOpen") == pytest.approx(mesh.blendshapes[BLENDSHAPE_NAMES.index("jawOpen")])
    assert found >= 10  # at most a few of the 12-14 images may lack a face


def test_happy_faces_smile(landmarker: FaceLandmarker) -> None:
    """Blendshapes carry meaning: smiles score higher on happy photos than on sad ones."""
    smiles = {}
    for label in ("happy", "sad"):
        files = sample_images(PHOTOS, 8)[label]
        meshes = [m for f in files for m in landmarker.detect(f)]
        smiles[label] = np.mean([m.blendshape("mouthSmileLeft") + m.blendshape("mouthSmileRight") for m in meshes])
    assert smiles["happy"] > 2 * smiles["sad"]


def test_fallback_finds_faces_the_plain_call_misses() -> None:
    plain = LandmarkerOptions(model_path=LANDMARKER, attempts=DEFAULT_ATTEMPTS[:1])
    with FaceLandmarker(plain) as lm_plain, FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER)) as lm:
        for name in NEEDS_FALLBACK:
            assert lm_plain.detect(FER_VAL / name) == []
            faces = lm.detect(FER_VAL / name)
            assert len(faces) == 1 and faces[0].attempt != "original"
            assert faces[0].image_size == (48, 48)


def test_padding_maps_landmarks_back_to_the_original_image() -> None:
    path = sample_images(PHOTOS, 1)["neutral"][0]
    padded = LandmarkerOptions(model_path=LANDMARKER, attempts=(Attempt("pad50", pad=0.5),))
    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER)) as a, FaceLandmarker(padded) as b:
        m1, m2 = a.detect(path)[0], b.detect(path)[0]
    assert m1.attempt == "original" and m2.attempt == "pad50"
    assert np.abs(m1.landmarks[:, :2] - m2.landmarks[:, :2]).mean() < 0.02


def test_blank_and_tiny_images_have_no_face(landmarker: FaceLandmarker) -> None:
    assert landmarker.detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert landmarker.detect(np.full((8, 8, 3), 255, np.uint8)) == []


def test_array_inputs_of_any_layout(landmarker: FaceLandmarker) -> None:
    from meshfer.images import read_image

    rgb = read_image(sample_images(PHOTOS, 1)["happy"][0])
    gray = rgb[:, :, 0]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    deep = rgb.astype(np.uint16) * 257
    for image in (rgb, gray, rgba, deep):
        faces = landmarker.detect(image)
        assert len(faces) == 1 and faces[0].image_size == (rgb.shape[1], rgb.shape[0])


def test_huge_image_keeps_its_size_and_coordinates(landmarker: FaceLandmarker) -> None:
    import cv2

    from meshfer.images import read_image

    small = read_image(sample_images(PHOTOS, 1)["surprised"][0])
    big = cv2.resize(small, (6000, 4000), interpolation=cv2.INTER_LINEAR)
    m_small, m_big = landmarker.detect(small)[0], landmarker.detect(big)[0]
    assert m_big.image_size == (6000, 4000)
    assert np.abs(m_small.landmarks[:, :2] - m_big.landmarks[:, :2]).mean() < 0.02


def test_video_mode_tracks_with_increasing_timestamps() -> None:
    from meshfer.images import read_image

    frame = read_image(sample_images(PHOTOS, 1)["happy"][0])
    options = LandmarkerOptions(model_path=LANDMARKER, running_mode=RunningMode.VIDEO)
    with FaceLandmarker(options) as lm:
        for i in range(3):
            faces = lm.detect_for_video(frame, i * 33)
            assert len(faces) == 1 and faces[0].attempt == "video"
        with pytest.raises(ValueError, match="increase"):
            lm.detect_for_video(frame, 33)
        with pytest.raises(RuntimeError, match="IMAGE"):
            lm.detect(frame)
    with pytest.raises(RuntimeError, match="closed"):
        lm.detect_for_video(frame, 1000)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        LandmarkerOptions(num_faces=0)
    with pytest.raises(ValueError):
        LandmarkerOptions(attempts=())
    assert LandmarkerOptions(running_mode="video").running_mode is RunningMode.VIDEO


def test_no_errors_at_interpreter_exit_without_close() -> None:
    code = (
        "from meshfer.landmarks import FaceLandmarker, LandmarkerOptions\n"
        f"lm = FaceLandmarker(LandmarkerOptions(model_path={str(LANDMARKER)!r}))\n"
        f"print(len(lm.detect({str(sample_images(PHOTOS, 1)['happy'][0])!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    """`import meshfer` loads no heavy library, creates no folder, changes no environment."""
    code = (
        "import os, sys, warnings\n"
        "before = dict(os.environ); filters = list(warnings.filters)\n"
        "import meshfer, meshfer.cli\n"
        "assert dict(os.environ) == before, 'environment changed'\n"
        "assert list(warnings.filters) == filters, 'warning filters changed'\n"
        "heavy = [m for m in ('mediapipe', 'tensorflow', 'onnxruntime', 'sklearn', 'pandas', 'cv2') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MESHFER_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_mediapipe_is_imported_without_tensorflow() -> None:
    code = (
        "import sys\n"
        "from meshfer.landmarks import import_mediapipe\n"
        "import_mediapipe()\n"
        "print('mediapipe' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.stdout.split() == ["True", "False"], proc.stderr
