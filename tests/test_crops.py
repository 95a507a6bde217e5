"""Mesh-aligned face crops on real photos with the real MediaPipe model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import FER_VAL, LANDMARKER, PHOTOS, sample_images
from meshfer.crops import DEFAULT_CROP, CropSpec, align_crop, crop_transform, standardize
from meshfer.images import read_image
from meshfer.landmarks import FaceLandmarker, LandmarkerOptions, RunningMode


@pytest.fixture(scope="module")
def cropping_landmarker():
    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER, crop=DEFAULT_CROP)) as lm:
        yield lm


def _similarity(image: np.ndarray, angle: float, scale: float, canvas: int) -> np.ndarray:
    """``image`` rotated by ``angle`` degrees and scaled, in the middle of a canvas x canvas frame."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += (canvas - w) / 2, (canvas - h) / 2
    return cv2.warpAffine(image, m, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(128, 128, 128))


def _photos_with_faces(landmarker: FaceLandmarker, n: int) -> list[tuple[np.ndarray, object]]:
    out = []
    for files in sample_images(PHOTOS, 3).values():
        for path in files:
            image = read_image(path)
            faces = landmarker.detect(image)
            if faces:
                out.append((image, faces[0]))
    assert len(out) >= n
    return out[:n]


def test_crop_of_rotated_and_scaled_face_matches_original(cropping_landmarker: FaceLandmarker) -> None:
    diffs, baseline = [], []
    for image, face in _photos_with_faces(cropping_landmarker, 6):
        assert face.crop is not None and face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
        canvas = int(1.5 * max(image.shape[:2]))
        # the photo on a grey canvas, then rotated and scaled copies of that: the same surroundings
        original = _similarity(image, 0.0, 1.0, canvas)
        ref = cropping_landmarker.detect(original)[0].crop
        for angle, scale in ((15.0, 0.75), (-12.0, 1.25)):
            moved = _similarity(image, angle, scale, canvas)
            again = cropping_landmarker.detect(moved)
            assert again, "face lost after a rotation and scaling"
            a, b = standardize(ref)[0, ..., 0], standardize(again[0].crop)[0, ..., 0]
            diffs.append(float(np.mean(np.abs(a - b))))
            # an unaligned view (the whole frame shrunk to 48x48) moves much more
            grey = [cv2.resize(cv2.cvtColor(v, cv2.COLOR_RGB2GRAY), (48, 48), interpolation=cv2.INTER_AREA)
                    for v in (original, moved)]
            baseline.append(float(np.mean(np.abs(standardize(grey[0]) - standardize(grey[1])))))
    # standardised crops: 0.2 is a fifth of the crop's own standard deviation
    assert np.median(diffs) < 0.2, diffs
    assert max(diffs) < 0.35, diffs
    assert np.median(diffs) < 0.3 * np.median(baseline), (diffs, baseline)


def test_crop_geometry_follows_the_template(cropping_landmarker: FaceLandmarker) -> None:
    image, face = _photos_with_faces(cropping_landmarker, 1)[0]
    m = crop_transform(face.landmarks, face.image_size)
    w, h = face.image_size
    eyes = face.landmarks[[33, 263], :2] * (w, h)
    mapped = eyes @ m[:, :2].T + m[:, 2]
    # eye line horizontal, both eyes near their template positions
    assert abs(mapped[0, 1] - mapped[1, 1]) < 2.0
    template = DEFAULT_CROP.template[[0, 3]] * DEFAULT_CROP.size
    assert np.all(np.abs(mapped - template) < 4.0)
    # the crop size is a parameter
    big = align_crop(image, face.landmarks, CropSpec(size=64))
    assert big.shape == (64, 64)


def test_fer_images_are_nearly_their_own_crops(cropping_landmarker: FaceLandmarker) -> None:
    scales = []
    for files in sample_images(FER_VAL, 2).values():
        for path in files:
            faces = cropping_landmarker.detect(path)
            if faces:
                m = crop_transform(faces[0].landmarks, faces[0].image_size)
                scales.append(float(np.hypot(m[0, 0], m[1, 0])))
    assert len(scales) >= 10
    assert 0.8 < np.median(scales) < 1.1


def test_video_mode_gives_crops() -> None:
    image = read_image(sorted((PHOTOS / "face_happy").iterdir())[0])
    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER, running_mode=RunningMode.VIDEO, crop=DEFAULT_CROP)) as lm:
        faces = lm.detect_for_video(image, 0)
        faces2 = lm.detect_for_video(image, 33)
    assert faces and faces[0].crop is not None and faces2[0].crop is not None
    assert np.mean(np.abs(faces[0].crop.astype(int) - faces2[0].crop.astype(int))) < 8


def test_standardize_and_degenerate_inputs() -> None:
    flat = np.full((2, 48, 48), 128, np.uint8)
    out = standardize(flat)
    assert out.shape == (2, 48, 48, 1) and out.dtype == np.float32 and np.all(out == 0)
    rng = np.random.default_rng(0)
    x = standardize(rng.integers(0, 255, (3, 48, 48), dtype=np.uint8))
    assert np.allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-4) and np.allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # a mesh collapsed to one point gives a finite transform and a crop
    lm = np.full((478, 3), 0.5, np.float32)
    m = crop_transform(lm, (100, 80))
    assert np.all(np.isfinite(m))
    assert align_crop(np.zeros((80, 100, 3), np.uint8), lm).shape == (48, 48)


def test_grey_of_a_region_view_equals_grey_of_a_copy() -> None:
    """The crop reads regions of frames as views (no copy): the same grey values as a contiguous copy."""
    import cv2

    from meshfer.crops import _grey

    rng = np.random.default_rng(0)
    for channels in (3, 4):
        frame = rng.integers(0, 256, (120, 160, channels), dtype=np.uint8)
        for view in (frame[10:90, 20:140], frame[:, ::-1], frame[::2, 5:]):
            want = cv2.cvtColor(np.ascontiguousarray(view[:, :, :3]), cv2.COLOR_RGB2GRAY)
            assert np.array_equal(_grey(view), want)
