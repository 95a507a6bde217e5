"""Reading image files into RGB uint8 arrays, whatever their format, depth or channel count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ImageReadError

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "read_image", "decode_image", "limit_size", "MAX_SIDE"]

#: File name extensions that meshfer treats as images (lower case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm", ".pbm", ".pnm", ".jp2"}
)

#: Images larger than this on their longer side are shrunk before detection: MediaPipe works at
#: 192-256 px internally, so a 6000x4000 photo only costs memory and time at full size.
MAX_SIDE = 1920


def is_image_file(path: str | Path) -> bool:
    """True when the file name has an image extension (the content is not checked)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes into an (H, W, 3) uint8 RGB array.

    Grayscale, RGBA (alpha dropped), palette and 16-bit images are all converted; EXIF
    orientation is applied. Raises ImageReadError naming ``name`` when decoding fails.
    """
    import cv2

    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        raise ImageReadError(name, "empty file")
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None:
        image = _decode_with_pillow(bytes(buf), name)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ImageReadError(name, f"unexpected decoded shape {image.shape}")
    return np.ascontiguousarray(image)


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    """Second chance for formats OpenCV lacks (e.g. some GIF/TIFF variants)."""
    import io

    try:
        from PIL import Image, ImageOps
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise ImageReadError(name, "not a readable image") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = arr.max() or 1.0
                arr = (arr * (255.0 / max(peak, 255.0))).clip(0, 255).astype(np.uint8)
                return np.stack([arr] * 3, axis=-1)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Image.UnidentifiedImageError:
        raise ImageReadError(name, "not a readable image") from None
    except Exception as exc:  # Pillow raises many exception types for damaged data
        raise ImageReadError(name, f"not a readable image (damaged: {exc})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file into an (H, W, 3) uint8 RGB array, or raise ImageReadError."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def limit_size(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """Shrink an image so that its longer side is at most ``max_side`` (area interpolation)."""
    h, w = image.shape[:2]
    side = max(h, w)
    if side <= max_side:
        return image
    import cv2

    scale = max_side / side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
