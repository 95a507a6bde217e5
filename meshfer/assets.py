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
import math
import os
import struct
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
_REQUIRED_MEMBERS = ("face_detector.tflite", "face_landmarks_detector.tflite", "face_blendshapes.tflite")
_NUM_LANDMARKS, _NUM_BLENDSHAPES = 478, 52
_checked: dict[tuple[str, int, int], Path] = {}


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


def tflite_io_shapes(data: bytes) -> tuple[list[list[int]], list[list[int]]]:
    """Shapes of the input and output tensors of a TensorFlow Lite model's first subgraph, read
    with a minimal FlatBuffers reader (Model.subgraphs[0] tensors, inputs, outputs). Raises
    ValueError when ``data`` is not a TFLite model."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TensorFlow Lite model")

    def u32(o: int) -> int:
        return struct.unpack_from("<I", data, o)[0]

    def i32(o: int) -> int:
        return struct.unpack_from("<i", data, o)[0]

    def field(table: int, index: int) -> int | None:
        vtable = table - i32(table)
        pos = 4 + 2 * index
        if pos >= struct.unpack_from("<H", data, vtable)[0]:
            return None
        off = struct.unpack_from("<H", data, vtable + pos)[0]
        return table + off if off else None

    def vector(pos: int | None) -> tuple[int, int]:
        if pos is None:
            return 0, 0
        start = pos + u32(pos)
        return start + 4, u32(start)

    try:
        root = u32(0)
        start, n = vector(field(root, 2))
        if n < 1:
            raise ValueError("the model has no subgraph")
        subgraph = start + u32(start)
        tensors, n_tensors = vector(field(subgraph, 0))

        def shape(i: int) -> list[int]:
            if not 0 <= i < n_tensors:
                raise ValueError(f"tensor index {i} out of range")
            t = tensors + 4 * i
            t += u32(t)
            s, k = vector(field(t, 0))
            return [i32(s + 4 * j) for j in range(k)]

        def ints(pos: int | None) -> list[int]:
            s, k = vector(pos)
            return [i32(s + 4 * j) for j in range(k)]

        return [shape(i) for i in ints(field(subgraph, 1))], [shape(i) for i in ints(field(subgraph, 2))]
    except (struct.error, IndexError, OverflowError) as exc:
        raise ValueError(f"damaged TensorFlow Lite model ({exc})") from None


def _member_problem(name: str, data: bytes) -> str | None:
    """Why a member of the bundle is not the model its name says (None when it is)."""
    try:
        inputs, outputs = tflite_io_shapes(data)
    except ValueError as exc:
        return str(exc)
    sizes = [math.prod(s) for s in outputs]
    image_input = len(inputs) == 1 and len(inputs[0]) == 4 and inputs[0][-1] == 3
    if name == "face_detector.tflite":
        boxes = any(len(s) == 3 and s[-1] >= 4 for s in outputs)
        if not image_input or not boxes or _NUM_LANDMARKS * 3 in sizes:
            return f"not a face detector (inputs {inputs}, outputs {outputs})"
    elif name == "face_landmarks_detector.tflite":
        if not image_input or _NUM_LANDMARKS * 3 not in sizes:
            return f"not a {_NUM_LANDMARKS}-point face landmark model (inputs {inputs}, outputs {outputs})"
    elif name == "face_blendshapes.tflite":
        if _NUM_BLENDSHAPES not in sizes or image_input:
            return f"not a {_NUM_BLENDSHAPES}-blendshape model (inputs {inputs}, outputs {outputs})"
    return None


def check_landmarker_file(path: str | Path) -> Path:
    """Check that ``path`` is a readable, complete face landmarker bundle; return it resolved.

    A .task file is a zip archive holding the detector, landmark and blendshape models; a
    truncated or unrelated file, and a bundle whose members are missing, damaged or swapped
    (each member's inputs and outputs are read), is reported here, by name, rather than crashing
    inside MediaPipe.
    """
    path = Path(path).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise LandmarkerModelError(f"{path}: landmarker model file not found (dangling symbolic link)")
        raise LandmarkerModelError(f"{path}: landmarker model file not found")
    if path.is_dir():
        raise LandmarkerModelError(f"{path}: is a folder; expected the face_landmarker.task file")
    if not path.is_file():
        raise LandmarkerModelError(f"{path}: not a regular file; expected the face_landmarker.task file")
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError as exc:
        raise LandmarkerModelError(f"{path}: cannot read landmarker model ({exc.strerror or exc})") from None
    if key in _checked:
        return _checked[key]
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
            for member in _REQUIRED_MEMBERS:
                problem = _member_problem(member, bundle.read(member))
                if problem is not None:
                    raise LandmarkerModelError(f"{path}: damaged or rearranged landmarker model: {member} is {problem}")
    except zipfile.BadZipFile:
        raise LandmarkerModelError(
            f"{path}: corrupt or truncated landmarker model (not a valid .task bundle); "
            f"delete it and fetch {LANDMARKER_FILENAME} again"
        ) from None
    except (OSError, EOFError, RuntimeError, ValueError) as exc:
        raise LandmarkerModelError(f"{path}: cannot read landmarker model ({getattr(exc, 'strerror', None) or exc})") from None
    _checked[key] = path.resolve()
    return _checked[key]


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
