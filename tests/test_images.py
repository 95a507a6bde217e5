"""Reading images of every kind, and refusing what is not an image with a clear reason."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PHOTOS
from meshfer.errors import ImageReadError
from meshfer.images import is_image_file, limit_size, read_image


def test_reads_grayscale_jpeg_as_rgb() -> None:
    path = next((PHOTOS / "face_happy").iterdir())
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_reads_rgba_and_16bit_png(tmp_path: Path) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 128
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    deep = np.full((20, 30), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    a = read_image(tmp_path / "rgba.png")
    assert a.shape == (20, 30, 3) and a[0, 0].tolist() == [0, 200, 0]
    b = read_image(tmp_path / "deep.png")
    assert b.shape == (20, 30, 3) and b.dtype == np.uint8
    assert abs(int(b[0, 0, 0]) - 40000 // 257) <= 1  # scaled, not clipped


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty file"), (b"this is text, not a JPEG", "not a readable image")],
)
def test_bad_files_name_the_file_and_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as err:
        read_image(path)
    assert str(path) in str(err.value) and reason in str(err.value)


def test_truncated_jpeg_is_reported_or_decoded(tmp_path: Path) -> None:
    data = (next((PHOTOS / "face_sad").iterdir())).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:200])
    with pytest.raises(ImageReadError):
        read_image(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_large_images_are_shrunk_for_detection() -> None:
    big = np.zeros((4000, 6000, 3), np.uint8)
    small = limit_size(big, 1920)
    assert small.shape == (1280, 1920, 3)
    assert limit_size(small, 1920) is small


def test_image_extensions() -> None:
    assert is_image_file("a/B.JPG") and is_image_file("x.webp") and not is_image_file("notes.txt")
