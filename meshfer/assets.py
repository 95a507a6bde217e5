"""Finding, checking and (as a last resort) downloading MediaPipe's face landmarker model file.

Resolution order for :func:`resolve_landmarker`:

1. an explicit path (``--landmarker PATH`` on the command line),
2. the environment variable ``MESHFER_LANDMARKER``,
3. ``face_landmarker.task`` in the user cache directory (:func:`cache_dir`),
4. a download from Google's model storage into that cache directory, checked against a pinned
   SHA-256 and written atomically.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from ._io import atomic_write
from .errors import LandmarkerModelError

__all__ = [
    "LANDMARKER_URL",
    "LANDMARKER_SHA256",
    "LANDMARKER_FILENAME",
    "ENV_LANDMARKER",
    "ENV_LANDMARKER_URL",
    "ENV_CACHE_DIR",
    "cache_dir",
    "resolve_landmarker",
    "check_landmarker_file",
    "download_file",
    "sha256_of",
]

LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
LANDMARKER_FILENAME = "face_landmarker.task"
ENV_LANDMARKER = "MESHFER_LANDMARKER"
ENV_LANDMARKER_URL = "MESHFER_LANDMARKER_URL"
ENV_CACHE_DIR = "MESHFER_CACHE_DIR"

# Members of the .task bundle (a zip archive) that the face landmarker needs.
_REQUIRED_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite")


def cache_dir() -> Path:
    """The per-user cache folder (``MESHFER_CACHE_DIR`` overrides it). Not created here."""
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("meshfer", appauthor=False))


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_landmarker_file(path: str | Path) -> Path:
    """Check that ``path`` is a readable, complete face landmarker bundle; return it resolved.

    A .task file is a zip archive holding the detector and landmark models; a truncated or
    unrelated file is reported here, by name, rather than crashing inside MediaPipe.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise LandmarkerModelError(f"{path}: landmarker model file not found")
    if path.is_dir():
        raise LandmarkerModelError(f"{path}: is a folder; expected the face_landmarker.task file")
    try:
        with zipfile.ZipFile(path) as bundle:
            names = set(bundle.namelist())
            missing = [m for m in _REQUIRED_MEMBERS if m not in names]
            if missing:
                raise LandmarkerModelError(
                    f"{path}: not a face landmarker model (bundle lacks {', '.join(missing)})"
                )
            bad = bundle.testzip()
            if bad is not None:
                raise LandmarkerModelError(f"{path}: corrupt landmarker model (member {bad} fails its checksum)")
    except zipfile.BadZipFile:
        raise LandmarkerModelError(
            f"{path}: corrupt or truncated landmarker model (not a valid .task bundle); "
            f"delete it and fetch {LANDMARKER_FILENAME} again"
        ) from None
    except OSError as exc:
        raise LandmarkerModelError(f"{path}: cannot read landmarker model ({exc.strerror or exc})") from None
    return path.resolve()


def download_file(
    url: str, dest: str | Path, sha256: str | None = None, *, progress: bool = True, timeout: float = 30.0
) -> Path:
    """Download ``url`` to ``dest`` atomically (temporary file, then rename), checking its SHA-256.

    Shows a tqdm progress bar when ``progress`` is true. The destination folder is created.
    """
    dest = Path(dest)
    h = hashlib.sha256()
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {dest.name}")
        try:
            while block := resp.read(1 << 16):
                out.write(block)
                h.update(block)
                if bar is not None:
                    bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
        if sha256 is not None and h.hexdigest() != sha256:
            raise LandmarkerModelError(
                f"{url}: downloaded file has SHA-256 {h.hexdigest()}, expected {sha256}; not saved"
            )
    return dest


def resolve_landmarker(path: str | Path | None = None, *, download: bool = True, progress: bool = True) -> Path:
    """Return the path of a usable face landmarker model file (see the module docstring for the order).

    Raises LandmarkerModelError with a message saying where to put the file when none can be
    found or fetched.
    """
    if path is not None:
        return check_landmarker_file(path)
    env = os.environ.get(ENV_LANDMARKER)
    if env:
        try:
            return check_landmarker_file(env)
        except LandmarkerModelError as exc:
            raise LandmarkerModelError(f"{exc} (from ${ENV_LANDMARKER})") from None
    cached = cache_dir() / LANDMARKER_FILENAME
    if cached.exists():
        return check_landmarker_file(cached)
    help_text = (
        f"put {LANDMARKER_FILENAME} (from {LANDMARKER_URL}) at {cached}, "
        f"or pass --landmarker PATH, or set ${ENV_LANDMARKER}"
    )
    if not download:
        raise LandmarkerModelError(f"no face landmarker model found: {help_text}")
    url = os.environ.get(ENV_LANDMARKER_URL) or LANDMARKER_URL
    try:
        download_file(url, cached, LANDMARKER_SHA256, progress=progress)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise LandmarkerModelError(f"no face landmarker model found and the download failed ({reason}): {help_text}") from None
    return check_landmarker_file(cached)
