"""Reading image files into RGB uint8 arrays, whatever their format, depth or channel count.

Big images cost no more memory than the landmarker needs. Before anything is decoded, the file's
header gives the image's size, and an image is refused (an :class:`~meshfer.errors.ImageReadError`
naming the file) when it has more than :data:`MAX_PIXELS` pixels or when decoding it would take
more than :data:`MAX_DECODE_BYTES` of memory. JPEGs are decoded at reduced size (1/2, 1/4 or 1/8,
by libjpeg's DCT scaling) down to what detection uses (``max_side``), so a 20000x20000 JPEG takes
tens of megabytes; formats that can only be decoded at full size (PNG, TIFF, WebP, BMP, GIF,
progressive and lossless JPEGs in part) meet the memory limit at about 50 megapixels.

Only regular files (and links to them) are opened: a FIFO, a device or a socket named ``x.jpg`` is
refused by name instead of blocking the run. Warnings that the decoders print (libjpeg's "Corrupt
JPEG data: ...") are given with the name of the file.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import captured_stderr
from .errors import ImageReadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "CANDIDATE_EXTENSIONS",
    "readable_extensions",
    "MAX_SIDE",
    "MAX_PIXELS",
    "MAX_DECODE_BYTES",
    "ImageHeader",
    "is_image_file",
    "file_problem",
    "probe_image",
    "decode_image",
    "read_image",
    "load_image",
    "limit_size",
]

#: The file name extensions of still-image formats that meshfer may read (lower case). Which of
#: them it does read depends on the decoders installed: see :func:`readable_extensions` and
#: :data:`IMAGE_EXTENSIONS`.
CANDIDATE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif",
    ".pgm", ".ppm", ".pbm", ".pnm", ".jp2", ".j2k", ".avif", ".heic", ".heif", ".hif", ".jxl",
)

#: Images larger than this on their longer side are shrunk before detection: MediaPipe works at
#: 192-256 px internally, so a 6000x4000 photo only costs memory and time at full size.
MAX_SIDE = 1920

#: Images with more pixels than this (1,000 megapixels) are refused before decoding, whatever
#: their format.
MAX_PIXELS = 1_000_000_000

#: The memory that reading one image may take: the file's bytes plus the decoder's buffers, as
#: estimated from the header before decoding (300 MiB). Files larger than this are not read.
MAX_DECODE_BYTES = 300 * 2**20

_SCALES = (8, 4, 2)
_REDUCED_FLAGS = {2: "IMREAD_REDUCED_COLOR_2", 4: "IMREAD_REDUCED_COLOR_4", 8: "IMREAD_REDUCED_COLOR_8"}


def _pillow() -> Any:
    """PIL.Image, with the HEIF/HEIC opener of pillow-heif registered when that is installed."""
    global _heif_tried
    from PIL import Image

    if not _heif_tried:
        _heif_tried = True
        try:
            import pillow_heif  # type: ignore[import-not-found]

            pillow_heif.register_heif_opener()
        except Exception:  # not installed, or too old / new for this Pillow
            pass
    return Image


_heif_tried = False


def _sample_image() -> np.ndarray:
    """A small grey test picture for the decoders' round trips (a gradient: not a flat image)."""
    y, x = np.mgrid[0:64, 0:64]
    return ((x * 3 + y * 2) % 256).astype(np.uint8)


def _opencv_reads(ext: str) -> bool:
    """OpenCV decodes what it encodes as ``ext`` (so both its codec and the extension are known)."""
    import cv2

    with captured_stderr():  # OpenCV logs a format it cannot encode on stderr
        try:
            if not cv2.haveImageWriter("x" + ext):
                return False
            ok, buf = cv2.imencode(ext, _sample_image())
            if not ok:
                return False
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        except (cv2.error, SystemError, ValueError):
            return False
    return image is not None and image.shape[:2] == (64, 64)


def _pillow_reads(ext: str) -> bool:
    """Pillow opens files named ``ext``: by a round trip where it also writes the format, else
    when its plugin for the format is a real decoder (not a stub that needs another library)."""
    import io
    import warnings

    try:
        Image = _pillow()
        from PIL import ImageFile
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return False
    Image.init()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.OPEN:
        return False
    factory = Image.OPEN[fmt][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        return False
    if fmt not in Image.SAVE:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            buf = io.BytesIO()
            Image.fromarray(_sample_image()).convert("RGB").save(buf, format=fmt)
            buf.seek(0)
            with Image.open(buf) as im:
                im.load()
                return im.size == (64, 64)
    except Exception:  # a plugin that is there but whose codec is not
        return False


@functools.lru_cache(maxsize=1)
def readable_extensions() -> frozenset[str]:
    """The extensions of :data:`CANDIDATE_EXTENSIONS` that the installed decoders read (OpenCV
    first, then Pillow, as :func:`read_image` tries them): found once per process by a round trip
    of a small picture through each format where the decoder also writes it. With the usual
    builds: JPEG, PNG, BMP, WebP, TIFF, GIF, the PNM formats and JPEG 2000; AVIF with an OpenCV or
    Pillow (11.3+) built with it; HEIC/HEIF once pillow-heif is installed."""
    return frozenset(ext for ext in CANDIDATE_EXTENSIONS if _opencv_reads(ext) or _pillow_reads(ext))


def __getattr__(name: str) -> Any:
    if name == "IMAGE_EXTENSIONS":  # computed on first use: it imports the decoders
        return readable_extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has the extension of an image format that the installed decoders
    read (:data:`IMAGE_EXTENSIONS`, from :func:`readable_extensions`); the content is not checked."""
    return Path(path).suffix.lower() in readable_extensions()


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a folder, not an image"
    if stat.S_ISFIFO(mode):
        return "not a regular file (a named pipe, FIFO)"
    if stat.S_ISCHR(mode):
        return "not a regular file (a character device)"
    if stat.S_ISBLK(mode):
        return "not a regular file (a block device)"
    if stat.S_ISSOCK(mode):
        return "not a regular file (a socket)"
    return "not a regular file"


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an image file, without opening it: 'no such file',
    'dangling symbolic link ...', 'symbolic link loop', 'not a regular file (a named pipe, FIFO)',
    ... ; None for a regular file (or a link to one)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except ValueError:  # a NUL byte: no file can have this name
        return "not a valid file name (it holds a NUL byte)"
    except FileNotFoundError:
        if os.path.islink(path):
            return "dangling symbolic link (its target does not exist)"
        return "no such file"
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if exc.errno == errno.ENAMETOOLONG:
            return _too_long(path)
        return f"cannot read file ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    return _kind(st.st_mode)


def _too_long(path: Path) -> str:
    """The reason for ENAMETOOLONG: which name of the path is over the system's limit."""
    raw = os.fsencode(path)
    try:
        name_max = os.pathconf(os.path.dirname(os.path.abspath(raw)) or b"/", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > name_max:
        return f"file name too long (a name in the path has {len(longest)} bytes; the system's limit is {name_max})"
    return f"file name too long (the path has {len(raw)} bytes, over the system's limit)"


# ------------------------------------------------------------------------------------------------
# Headers


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding: ``format`` ('jpeg', 'png', or Pillow's
    format name in lower case), ``width`` and ``height`` (as stored, before any EXIF rotation),
    ``reducible`` (decodable at 1/2, 1/4, 1/8: JPEG), and the estimated decoder memory
    ``full_bytes`` (at full size, beyond the output) and ``fixed_bytes`` (whatever the scale)."""

    format: str
    width: int
    height: int
    reducible: bool = False
    full_bytes: int = 0
    fixed_bytes: int = 0
    deep: bool = False  # samples of more than 8 bits (or floats): decoded at their depth

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def decode_bytes(self, scale: int = 1) -> int:
        """Estimated memory (bytes) to decode at 1/``scale``: output and working buffers."""
        if scale <= 1 or not self.reducible:
            return self.full_bytes + self.fixed_bytes
        out = math.ceil(self.width / scale) * math.ceil(self.height / scale)
        return out * 3 * 2 + self.fixed_bytes


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_LOSSLESS = {0xC3, 0xC7, 0xCB, 0xCF}


def _probe_jpeg(b: bytes) -> ImageHeader | None:
    i, n = 2, len(b)
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        length = (b[i + 2] << 8) | b[i + 3]
        if marker in _SOF:
            if i + 10 > n:
                return None
            precision = b[i + 4]
            height, width = struct.unpack(">HH", b[i + 5 : i + 9])
            ncomp = b[i + 9]
            comps = [(b[i + 11 + 3 * k] >> 4, b[i + 11 + 3 * k] & 15) for k in range(ncomp) if i + 12 + 3 * k <= n]
            if width == 0 or height == 0 or not comps:
                return None
            hmax = max(max(h for h, _ in comps), 1)
            vmax = max(max(v for _, v in comps), 1)
            sample = 2 if precision > 8 else 1
            fixed = width * 16 * vmax * ncomp * 2 * sample  # a few rows of MCUs
            if marker in _PROGRESSIVE:  # libjpeg holds every DCT coefficient of the image
                for h, v in comps:
                    bw = math.ceil(math.ceil(width * max(h, 1) / hmax) / 8)
                    bh = math.ceil(math.ceil(height * max(v, 1) / vmax) / 8)
                    fixed += bw * bh * 64 * 2
            lossless = marker in _LOSSLESS
            full = width * height * (3 * 2 + (ncomp if ncomp > 3 else 0)) * (sample if lossless else 1)
            return ImageHeader("jpeg", width, height, reducible=not lossless, full_bytes=full, fixed_bytes=fixed)
        i += 2 + length
    return None


def _probe_png(b: bytes) -> ImageHeader | None:
    if len(b) < 33 or b[12:16] != b"IHDR":
        return None
    width, height, depth = struct.unpack(">IIB", b[16:25])
    if width == 0 or height == 0:
        return None
    # libpng's rows plus OpenCV's converted output: about twice the 8-bit RGB image.
    return ImageHeader("png", width, height, full_bytes=width * height * 3 * 2, deep=depth > 8)


def _probe_pillow(b: bytes) -> ImageHeader | None:
    import io
    import warnings

    try:
        Image = _pillow()
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(b)) as im:
                fmt, (width, height), mode = (im.format or "").lower(), im.size, im.mode
    except Image.DecompressionBombError as exc:
        import re

        numbers = [int(x) for x in re.findall(r"\d+", str(exc))]
        pixels = numbers[0] if numbers else MAX_PIXELS + 1
        return ImageHeader("image", pixels, 1, full_bytes=pixels * 8)
    except Exception:
        return None
    if width <= 0 or height <= 0:
        return None
    try:
        bands = Image.getmodebands(mode)
    except Exception:
        bands = 4
    sample = 4 if mode in ("I", "F") or mode.startswith("F") else 2 if mode.startswith("I;16") else 1
    deep = sample > 1
    per_pixel = max(bands, 1) * sample * 2 + (12 if deep else 3)
    return ImageHeader(fmt or "image", width, height, full_bytes=width * height * per_pixel, deep=deep)


def _as_bytes(buf: np.ndarray) -> bytes:
    """The bytes of a uint8 buffer, without a copy when it wraps a whole bytes object."""
    base = buf.base
    if isinstance(base, bytes) and len(base) == buf.size:
        return base
    return buf.tobytes()


def probe_image(data: bytes | bytearray | memoryview | np.ndarray) -> ImageHeader | None:
    """The :class:`ImageHeader` of encoded image bytes, read from the header only (None when the
    format is not recognised)."""
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    head = bytes(buf[: 1 << 20])
    if head[:3] == b"\xff\xd8\xff":
        return _probe_jpeg(head)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _probe_png(head)
    # Pillow reads only the header when it opens a file (it decodes nothing here); some formats
    # keep what it needs anywhere in the file (TIFF's directory, WebP's chunks): the whole buffer.
    return _probe_pillow(_as_bytes(buf))


def _check_size(header: ImageHeader | None, file_bytes: int, scale: int, name: str) -> None:
    if header is None:
        return
    size = f"{header.width}x{header.height} pixels, " if header.height > 1 else ""
    if header.pixels > MAX_PIXELS:
        raise ImageReadError(
            name, f"image too large ({size}{header.pixels / 1e6:,.0f} megapixels; the limit is {MAX_PIXELS / 1e6:,.0f})"
        )
    need = file_bytes + header.decode_bytes(scale)
    if need > MAX_DECODE_BYTES:
        raise ImageReadError(
            name,
            f"image too large to decode ({size}{header.pixels / 1e6:,.0f} megapixels of {header.format.upper()} would "
            f"take about {need / 2**20:,.0f} MB; the limit is {MAX_DECODE_BYTES / 2**20:,.0f} MB)",
        )


def _choose_scale(header: ImageHeader | None, max_side: int | None) -> int:
    if header is None or not header.reducible or not max_side:
        return 1
    side = max(header.width, header.height)
    for s in _SCALES:
        if math.ceil(side / s) >= max_side:
            return s
    return 1


# ------------------------------------------------------------------------------------------------
# Decoding


def _report(name: str, texts: list[str], messages: list[str] | None) -> None:
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    for line in lines:
        message = f"{name}: {line}"
        if messages is not None:
            messages.append(message)
        else:
            try:
                print(f"meshfer: warning: {message}", file=sys.stderr)
            except (OSError, ValueError):
                pass


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit samples from 16-bit, 32-bit integer or floating-point ones (floats in [0, 1] map to
    0-255; larger values are scaled by the image's maximum)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    arr = image.astype(np.float32, copy=False)
    if np.issubdtype(image.dtype, np.floating):
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(arr.max()) if arr.size else 0.0
        scale = 255.0 if peak <= 1.0 else 255.0 / peak
    else:
        peak = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / max(peak, 255.0)
    return np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8)


def _to_bgr3(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def _decode_cv2(buf: np.ndarray, header: ImageHeader | None, scale: int, name: str, messages: list[str] | None) -> np.ndarray | None:
    import cv2

    deep = [cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, cv2.IMREAD_UNCHANGED]  # 32-bit and float samples
    if scale > 1:
        flag_list = [getattr(cv2, _REDUCED_FLAGS[scale])]
    elif header is not None and header.deep and header.format == "tiff":
        flag_list = deep
    elif header is None:
        flag_list = [cv2.IMREAD_COLOR, *deep]
    else:
        flag_list = [cv2.IMREAD_COLOR]
    for flags in flag_list:
        with captured_stderr() as log:
            try:
                image = cv2.imdecode(buf, flags)
            except cv2.error:
                image = None
            except MemoryError:
                raise ImageReadError(name, "not enough memory to decode it") from None
        if image is not None and image.size:
            _report(name, log, messages)
            return _to_bgr3(image)
    return None


def _decode_with_pillow(data: np.ndarray, name: str, header: ImageHeader | None, scale: int) -> np.ndarray:
    """Second chance for formats OpenCV lacks (e.g. some GIF/TIFF variants). Returns RGB."""
    import io
    import warnings

    try:
        Image = _pillow()
        from PIL import ImageOps
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise ImageReadError(name, "not a readable image") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(_as_bytes(data))) as im:
                if scale > 1 and header is not None:
                    im.draft("RGB", (math.ceil(header.width / scale), math.ceil(header.height / scale)))
                im = ImageOps.exif_transpose(im)
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                    arr = _to_uint8(np.asarray(im))
                    return np.stack([arr] * 3, axis=-1)
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Image.DecompressionBombError:
        raise ImageReadError(name, "image too large (Pillow refuses it as a decompression bomb)") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(name, "not a readable image") from None
    except MemoryError:
        raise ImageReadError(name, "not enough memory to decode it") from None
    except Exception as exc:  # Pillow raises many exception types for damaged data
        raise ImageReadError(name, f"not a readable image (damaged: {exc})") from None


def _decode(
    data: bytes | bytearray | memoryview | np.ndarray, name: str, max_side: int | None, messages: list[str] | None
) -> tuple[np.ndarray, tuple[int, int]]:
    import cv2

    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buf.size == 0:
        raise ImageReadError(name, "empty file")
    if buf.size > MAX_DECODE_BYTES:
        raise ImageReadError(name, f"file too large ({buf.size / 2**20:,.0f} MB; the limit is {MAX_DECODE_BYTES / 2**20:,.0f} MB)")
    header = probe_image(buf)
    scale = _choose_scale(header, max_side)
    _check_size(header, int(buf.size), scale, name)
    bgr = _decode_cv2(buf, header, scale, name, messages)
    if bgr is not None:
        decoded = bgr.shape[:2]
        if max_side:
            bgr = limit_size(bgr, max_side)
        bgr = _to_uint8(bgr)
        try:
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        except cv2.error as exc:
            raise ImageReadError(name, f"not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    else:
        image = _decode_with_pillow(buf, name, header, scale)
        decoded = image.shape[:2]
        if max_side:
            image = limit_size(image, max_side)
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ImageReadError(name, f"unexpected decoded shape {image.shape}")
    h, w = decoded
    size = (int(w), int(h))
    if scale > 1 and header is not None:
        # Decoded at reduced size: the original size is the header's (turned by an EXIF rotation).
        sw, sh = math.ceil(header.width / scale), math.ceil(header.height / scale)
        rotated = header.width != header.height and abs(w - sh) <= 1 and abs(h - sw) <= 1
        size = (header.height, header.width) if rotated else (header.width, header.height)
    return np.ascontiguousarray(image), size


def decode_image(
    data: bytes | np.ndarray, name: str = "<bytes>", *, max_side: int | None = None, messages: list[str] | None = None
) -> np.ndarray:
    """Decode encoded image bytes into an (H, W, 3) uint8 RGB array.

    Grayscale, RGBA (alpha dropped), palette, 16-bit and floating-point images are all converted;
    EXIF orientation is applied. With ``max_side`` the result is at most that long on its longer
    side (JPEGs are decoded at reduced size). Decoder warnings go to ``messages`` when given
    (else to stderr), each naming ``name``. Raises ImageReadError naming ``name`` when the image
    cannot be decoded or is too large (:data:`MAX_PIXELS`, :data:`MAX_DECODE_BYTES`).
    """
    return _decode(data, name, max_side, messages)[0]


def _read_bytes(path: Path) -> np.ndarray:
    """The bytes of a regular file (never opening a FIFO or device for reading)."""
    problem = file_problem(path)
    if problem is not None:
        raise ImageReadError(path, problem)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a folder, not an image") from None
    except PermissionError:
        raise ImageReadError(path, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced since it was checked
            raise ImageReadError(path, _kind(st.st_mode))
        if st.st_size > MAX_DECODE_BYTES:
            raise ImageReadError(
                path, f"file too large ({st.st_size / 2**20:,.0f} MB; the limit is {MAX_DECODE_BYTES / 2**20:,.0f} MB)"
            )
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(MAX_DECODE_BYTES + 1)
    except OSError as exc:
        raise ImageReadError(path, f"cannot read file ({exc.strerror or exc})") from None
    except MemoryError:
        raise ImageReadError(path, "not enough memory to read it") from None
    finally:
        if fd >= 0:
            os.close(fd)
    return np.frombuffer(data, np.uint8)


def load_image(
    path: str | Path, *, max_side: int | None = None, messages: list[str] | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file: the (H, W, 3) uint8 RGB array (at most ``max_side`` on its longer side
    when given, decoded at reduced size where the format allows) and the image's original
    (width, height). Raises ImageReadError naming the file and the reason, for any failure."""
    path = Path(path)
    data = _read_bytes(path)
    try:
        return _decode(data, str(path), max_side, messages)
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(path, "not enough memory to decode it") from None
    except Exception as exc:  # a decoder failing in an unforeseen way: this file's error, not the run's
        raise ImageReadError(path, f"not a readable image ({type(exc).__name__}: {exc})") from None


def read_image(path: str | Path, *, max_side: int | None = None, messages: list[str] | None = None) -> np.ndarray:
    """Read an image file into an (H, W, 3) uint8 RGB array, or raise ImageReadError (see
    :func:`load_image`)."""
    return load_image(path, max_side=max_side, messages=messages)[0]


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
