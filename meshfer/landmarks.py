"""Face meshes from images: a thin, typed wrapper over MediaPipe's Face Landmarker (Tasks API).

MediaPipe Tasks style: an options dataclass (:class:`LandmarkerOptions`), a factory
(:meth:`FaceLandmarker.create_from_options`), a context manager, and explicit IMAGE / VIDEO running
modes. Results are :class:`FaceMesh` objects holding NumPy arrays, never MediaPipe's per-point
objects.

In IMAGE mode a face that the detector misses on the image as given is looked for again on padded
copies (tight crops such as FER-2013's 48x48 faces defeat the face detector); each mesh records
which attempt found it. Landmarks are always given in the coordinates of the original image.
"""

from __future__ import annotations

import atexit
import enum
import importlib.abc
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import captured_stderr
from .crops import CropSpec
from .errors import LandmarkerModelError
from .images import MAX_SIDE, limit_size, load_image

__all__ = [
    "NUM_LANDMARKS",
    "BLENDSHAPE_NAMES",
    "RunningMode",
    "Attempt",
    "DEFAULT_ATTEMPTS",
    "LandmarkerOptions",
    "FaceMesh",
    "FaceLandmarker",
    "import_mediapipe",
]

NUM_LANDMARKS = 478
#: In IMAGE mode MediaPipe is asked for up to this many faces (at least ``num_faces``), so that
#: the largest face of a group photo is the one returned first.
IMAGE_FACES_SOUGHT = 4

#: The 52 blendshape categories in MediaPipe's output order.
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
_BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


class RunningMode(str, enum.Enum):
    """IMAGE: independent images (detection on each, with fallback). VIDEO: frames of one stream
    with increasing timestamps (the face is tracked between frames)."""

    IMAGE = "image"
    VIDEO = "video"


@dataclass(frozen=True)
class Attempt:
    """One way of presenting an image to the landmarker.

    ``pad`` is the border added on every side, as a fraction of the image's longer side, filled
    with grey level ``fill``. ``permissive`` uses the low-threshold landmarker
    (:attr:`LandmarkerOptions.fallback_confidence`).
    """

    name: str
    pad: float = 0.0
    fill: int = 0
    permissive: bool = False


#: The attempts made in IMAGE mode, in order, until one finds a face. Chosen by measuring coverage
#: on FER-2013 validation and the muxspace photos (see README, "Finding the face").
DEFAULT_ATTEMPTS: tuple[Attempt, ...] = (
    Attempt("original"),
    Attempt("pad50", pad=0.5, permissive=True),
    Attempt("pad50_grey", pad=0.5, fill=128, permissive=True),
    Attempt("pad100", pad=1.0, permissive=True),
)


@dataclass(frozen=True)
class LandmarkerOptions:
    """Options for :class:`FaceLandmarker` (mirrors MediaPipe's FaceLandmarkerOptions).

    ``model_path`` None means: resolve it with :func:`meshfer.assets.resolve_landmarker`
    (``$MESHFER_LANDMARKER``, the user cache, then a download unless ``download`` is false).
    ``num_faces`` is the number of meshes returned per image, largest face first (in IMAGE mode up to
    :data:`IMAGE_FACES_SOUGHT` faces are looked for whatever ``num_faces`` is, and each mesh records
    how many were found). ``attempts`` are tried in order in IMAGE mode; pass ``attempts=DEFAULT_ATTEMPTS[:1]`` to turn
    the fallback off. ``fallback_confidence`` is the detection/presence threshold of the
    permissive attempts. ``quiet`` hides MediaPipe's start-up log lines on stderr. ``crop``: also
    cut each face's mesh-aligned grey crop (:mod:`meshfer.crops`) into :attr:`FaceMesh.crop`.
    """

    model_path: str | Path | None = None
    running_mode: RunningMode = RunningMode.IMAGE
    num_faces: int = 1
    min_face_detection_confidence: float = 0.5
    min_face_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    attempts: tuple[Attempt, ...] = DEFAULT_ATTEMPTS
    fallback_confidence: float = 0.1
    max_side: int = MAX_SIDE
    download: bool = True
    quiet: bool = True
    crop: CropSpec | None = None

    def __post_init__(self) -> None:
        if self.num_faces < 1:
            raise ValueError("num_faces must be at least 1")
        if not self.attempts:
            raise ValueError("attempts must hold at least one Attempt")
        object.__setattr__(self, "running_mode", RunningMode(self.running_mode))
        object.__setattr__(self, "attempts", tuple(self.attempts))


@dataclass(frozen=True, eq=False)
class FaceMesh:
    """One face found in one image.

    ``landmarks``: (478, 3) float32, MediaPipe's normalised coordinates of the original image
    (x / width, y / height, z on roughly the scale of x). ``blendshapes``: (52,) float32 in
    :data:`BLENDSHAPE_NAMES` order. ``transform``: (4, 4) float32 facial transformation matrix.
    ``image_size``: (width, height) in pixels. ``attempt``: name of the :class:`Attempt` that
    found the face. ``crop``: the (S, S) uint8 mesh-aligned grey face crop when the landmarker was
    asked for one (:attr:`LandmarkerOptions.crop`), else None. ``faces_found``: how many faces
    MediaPipe found in the image (the meshes come largest first).
    """

    landmarks: np.ndarray
    blendshapes: np.ndarray
    transform: np.ndarray
    image_size: tuple[int, int]
    attempt: str = "original"
    crop: np.ndarray | None = None
    faces_found: int = 1

    def blendshape(self, name: str) -> float:
        """Score of one blendshape by name (KeyError lists nothing: see BLENDSHAPE_NAMES)."""
        return float(self.blendshapes[_BLENDSHAPE_INDEX[name]])

    @property
    def blendshape_scores(self) -> dict[str, float]:
        """All 52 blendshape scores by name."""
        return {n: float(v) for n, v in zip(BLENDSHAPE_NAMES, self.blendshapes)}

    @property
    def points(self) -> np.ndarray:
        """(478, 3) landmarks in pixels (x, y) with z on the same scale: an isotropic frame."""
        w, h = self.image_size
        return self.landmarks * np.array([w, h, w], dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# MediaPipe import and logging


class _BlockTensorFlow(importlib.abc.MetaPathFinder):
    """Makes ``import tensorflow`` fail while MediaPipe is being imported.

    MediaPipe imports TensorFlow, when it is installed, only to fetch a docs decorator; that costs
    ~5 s and ~400 MB and would lock Keras 3 in before the GNN can ask for Keras 2.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


class _LazyUnusedModules(importlib.abc.MetaPathFinder):
    """Loads the parts of MediaPipe that meshfer never uses lazily (on first attribute access)
    while MediaPipe is being imported: the drawing helpers import matplotlib.pyplot (~1 s of a 2 s
    cold start), the audio tasks import sounddevice and PortAudio, and the text, retrieval and
    decision tasks their own modules (together ~75 ms of every start)."""

    NAMES = frozenset({
        "mediapipe.tasks.python.vision.drawing_utils", "mediapipe.tasks.python.vision.drawing_styles",
        "mediapipe.tasks.python.audio", "mediapipe.tasks.python.text", "mediapipe.tasks.python.retrieval",
        "mediapipe.tasks.python.decision",
    })

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in self.NAMES:
            return None
        import importlib.util

        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


_import_lock = threading.Lock()


def import_mediapipe() -> tuple[Any, Any]:
    """Import MediaPipe's Tasks vision API without dragging TensorFlow (or matplotlib) in;
    returns (mp, vision)."""
    with _import_lock:
        hooks: list[importlib.abc.MetaPathFinder] = []
        if "mediapipe" not in sys.modules:
            hooks.append(_LazyUnusedModules())
            if "tensorflow" not in sys.modules:
                hooks.append(_BlockTensorFlow())
        sys.meta_path[:0] = hooks
        try:
            import mediapipe as mp
            from mediapipe.tasks.python import vision
        finally:
            for hook in hooks:
                sys.meta_path.remove(hook)
    return mp, vision


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _log_error_line(log: list[str]) -> str:
    """The most telling line of MediaPipe's captured log: the last error line (E... or one that
    says failed/error), never an informational one."""
    lines = [line.strip() for line in "".join(log).splitlines() if line.strip()]
    errors = [
        line for line in lines
        if line[:1] in ("E", "F") and line[1:5].isdigit() or "failed" in line.lower() or "error" in line.lower()
    ]
    return errors[-1][:300] if errors else ""


def _face_area(mesh: "FaceMesh") -> float:
    """Area in pixels of the bounding box of a face's landmarks (to find the largest face)."""
    w, h = mesh.image_size
    xy = mesh.landmarks[:, :2]
    span = np.nanmax(xy, axis=0) - np.nanmin(xy, axis=0)
    return float(span[0] * w * span[1] * h)


def _close_before_shutdown(landmarker: "FaceLandmarker") -> None:
    """Close ``landmarker`` (if still alive) when the interpreter exits, while MediaPipe's dispatcher
    thread still runs: closing it later, from MediaPipe's own ``__del__`` during module teardown,
    prints a TypeError traceback. ``threading._register_atexit`` runs before thread pools shut
    down (``atexit`` runs after)."""
    ref = weakref.ref(landmarker)

    def close() -> None:
        obj = ref()
        if obj is not None:
            obj.close()

    register = getattr(threading, "_register_atexit", None)
    try:
        (register or atexit.register)(close)
    except RuntimeError:  # interpreter already shutting down
        pass


# --------------------------------------------------------------------------------------------------


class FaceLandmarker:
    """MediaPipe face landmarker returning :class:`FaceMesh` objects.

    Use as a context manager, or call :meth:`close`::

        with FaceLandmarker.create_from_options(LandmarkerOptions()) as lm:
            faces = lm.detect("photo.jpg")
    """

    def __init__(self, options: LandmarkerOptions | None = None) -> None:
        from .assets import resolve_landmarker

        self.options = options or LandmarkerOptions()
        self.model_path = resolve_landmarker(self.options.model_path, download=self.options.download)
        self._mp, self._vision = import_mediapipe()
        self._last_timestamp: int | None = None
        self._closed = False
        #: Seconds spent inside MediaPipe's detect calls so far (for benchmarks).
        self.inference_seconds = 0.0
        #: Seconds spent cutting face crops (``options.crop``) so far.
        self.crop_seconds = 0.0
        self._strict = self._create(
            self.options.min_face_detection_confidence, self.options.min_face_presence_confidence
        )
        self._permissive: Any = None
        _close_before_shutdown(self)

    @classmethod
    def create_from_options(cls, options: LandmarkerOptions) -> "FaceLandmarker":
        """Factory in MediaPipe's style."""
        return cls(options)

    @classmethod
    def create_from_model_path(cls, model_path: str | Path | None = None, **kwargs: Any) -> "FaceLandmarker":
        """Factory taking the model path (and any other :class:`LandmarkerOptions` fields)."""
        return cls(LandmarkerOptions(model_path=model_path, **kwargs))

    def _create(self, detection: float, presence: float, permissive: bool = False) -> Any:
        vision = self._vision
        mode = (
            vision.RunningMode.VIDEO if self.options.running_mode is RunningMode.VIDEO else vision.RunningMode.IMAGE
        )
        mp_options = vision.FaceLandmarkerOptions(
            base_options=self._mp.tasks.BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=mode,
            num_faces=self._faces_sought if not permissive else self.options.num_faces,
            min_face_detection_confidence=detection,
            min_face_presence_confidence=presence,
            min_tracking_confidence=self.options.min_tracking_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        with captured_stderr(self.options.quiet) as log:
            try:
                return vision.FaceLandmarker.create_from_options(mp_options)
            except Exception as exc:  # MediaPipe raises RuntimeError/ValueError with long graph dumps
                first = _first_line(exc)
                error = LandmarkerModelError(f"{self.model_path}: MediaPipe cannot load this model ({first})")
        detail = _log_error_line(log)
        raise LandmarkerModelError(f"{error}{' - ' + detail if detail else ''}")

    @property
    def _faces_sought(self) -> int:
        """Faces asked of the strict landmarker: several in IMAGE mode, to find the largest (the
        permissive fallback, whose low threshold also finds false faces, is asked for
        ``num_faces`` only)."""
        if self.options.running_mode is RunningMode.IMAGE:
            return max(self.options.num_faces, IMAGE_FACES_SOUGHT)
        return self.options.num_faces

    def _run(self, landmarker: Any, mp_image: Any, timestamp_ms: int | None = None) -> Any:
        """One MediaPipe call, its log kept off stderr (``quiet``) and its failure made one line."""
        t = time.perf_counter()
        with captured_stderr(self.options.quiet) as log:
            try:
                if timestamp_ms is None:
                    return landmarker.detect(mp_image)
                return landmarker.detect_for_video(mp_image, timestamp_ms)
            except (RuntimeError, ValueError) as exc:
                error = LandmarkerModelError(
                    f"{self.model_path}: MediaPipe's face landmarker failed ({_first_line(exc)})"
                )
            finally:
                self.inference_seconds += time.perf_counter() - t
        detail = _log_error_line(log)
        raise LandmarkerModelError(f"{error}{' - ' + detail if detail else ''}")

    # ---------------------------------------------------------------------------------------------

    def detect(self, image: np.ndarray | str | Path, *, image_size: tuple[int, int] | None = None) -> list[FaceMesh]:
        """Faces in one image (IMAGE mode): a list of up to ``num_faces`` meshes, largest face
        first, empty if none.

        ``image`` is an (H, W, 3) uint8 RGB array or a path (read with
        :func:`meshfer.images.load_image`, at reduced size where the format allows). Pass
        ``image_size`` (width, height) when the array is a shrunk copy of a larger image, so that
        the meshes record the original size. The attempts of ``options.attempts`` are made in
        order until one finds a face.
        """
        self._check_open()
        if self.options.running_mode is not RunningMode.IMAGE:
            raise RuntimeError("detect() needs running_mode=IMAGE; use detect_for_video() in VIDEO mode")
        rgb, size = self._prepare(image, image_size)
        name = image if isinstance(image, (str, Path)) else "<array>"
        try:
            return self._detect_attempts(rgb, size)
        except MemoryError:  # this image's problem (a tight memory limit), not the run's
            from .errors import ImageReadError

            raise ImageReadError(name, "not enough memory to look for the face") from None
        except Exception as exc:
            if not type(exc).__module__.startswith("cv2"):  # OpenCV failing to pad it (memory)
                raise
            from .errors import ImageReadError

            raise ImageReadError(name, f"cannot look for the face ({_first_line(exc)})") from None

    def _detect_attempts(self, rgb: np.ndarray, size: tuple[int, int]) -> list[FaceMesh]:
        h, w = rgb.shape[:2]
        for attempt in self.options.attempts:
            landmarker = self._permissive_landmarker() if attempt.permissive else self._strict
            inner = (w, h)
            if attempt.pad > 0:
                import cv2

                # The padded canvas is kept within max_side (the image shrunk to fit): a border
                # round a big image would cost hundreds of MB and tell the detector nothing more.
                scale = min(1.0, self.options.max_side / (max(h, w) * (1.0 + 2.0 * attempt.pad)))
                src = rgb
                if scale < 1.0:
                    inner = (max(1, round(w * scale)), max(1, round(h * scale)))
                    src = cv2.resize(rgb, inner, interpolation=cv2.INTER_AREA)
                p = max(1, int(round(max(inner) * attempt.pad)))
                fill = (attempt.fill,) * 3
                padded = cv2.copyMakeBorder(src, p, p, p, p, cv2.BORDER_CONSTANT, value=fill)
                del src
            else:
                p, padded = 0, rgb
            mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=padded)
            del padded
            result = self._run(landmarker, mp_image)
            del mp_image
            if result.face_landmarks:
                return self._with_crops(self._convert(result, size, attempt.name, pad=p, inner=inner), rgb)
        return []

    def detect_for_video(self, frame: np.ndarray, timestamp_ms: int) -> list[FaceMesh]:
        """Faces in one video frame (VIDEO mode); ``timestamp_ms`` must increase from call to call."""
        self._check_open()
        if self.options.running_mode is not RunningMode.VIDEO:
            raise RuntimeError("detect_for_video() needs running_mode=VIDEO")
        timestamp_ms = int(timestamp_ms)
        if self._last_timestamp is not None and timestamp_ms <= self._last_timestamp:
            raise ValueError(
                f"video timestamps must increase: got {timestamp_ms} ms after {self._last_timestamp} ms"
            )
        self._last_timestamp = timestamp_ms
        rgb, size = self._prepare(frame)
        h, w = rgb.shape[:2]
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        result = self._run(self._strict, mp_image, timestamp_ms)
        return self._with_crops(self._convert(result, size, "video", pad=0, inner=(w, h)), rgb)

    # ---------------------------------------------------------------------------------------------

    def _prepare(
        self, image: np.ndarray | str | Path, image_size: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """RGB uint8, contiguous, at most ``max_side``; plus the (width, height) before shrinking."""
        if isinstance(image, (str, Path)):
            image, image_size = load_image(image, max_side=self.options.max_side)
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        elif image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        elif image.ndim == 3 and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        if image.dtype != np.uint8:
            if image.dtype == np.uint16:
                image = (image >> 8).astype(np.uint8)
            elif np.issubdtype(image.dtype, np.floating):
                image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            else:
                raise ValueError(f"unsupported image dtype {image.dtype}")
        size = (int(image.shape[1]), int(image.shape[0])) if image_size is None else (int(image_size[0]), int(image_size[1]))
        return np.ascontiguousarray(limit_size(image, self.options.max_side)), size

    def _with_crops(self, faces: list[FaceMesh], rgb: np.ndarray) -> list[FaceMesh]:
        spec = self.options.crop
        if spec is None or not faces:
            return faces
        from dataclasses import replace

        from .crops import align_crop

        t = time.perf_counter()
        out = [replace(f, crop=align_crop(rgb, f.landmarks, spec)) for f in faces]
        self.crop_seconds += time.perf_counter() - t
        return out

    def _permissive_landmarker(self) -> Any:
        if self._permissive is None:
            c = self.options.fallback_confidence
            self._permissive = self._create(c, c, permissive=True)
        return self._permissive

    def _convert(self, result: Any, size: tuple[int, int], attempt: str, *, pad: int, inner: tuple[int, int]) -> list[FaceMesh]:
        """MediaPipe's result as meshes, largest face first, at most ``num_faces`` of them."""
        faces: list[FaceMesh] = []
        w, h = inner
        for i, points in enumerate(result.face_landmarks):
            lm = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float32)
            if pad:
                # Back from the padded canvas to the original image's normalised coordinates.
                pw, ph = w + 2 * pad, h + 2 * pad
                lm[:, 0] = (lm[:, 0] * pw - pad) / w
                lm[:, 1] = (lm[:, 1] * ph - pad) / h
                lm[:, 2] = lm[:, 2] * pw / w
            scores = np.zeros(len(BLENDSHAPE_NAMES), dtype=np.float32)
            if result.face_blendshapes:
                for cat in result.face_blendshapes[i]:
                    j = _BLENDSHAPE_INDEX.get(cat.category_name)
                    if j is not None:
                        scores[j] = cat.score
            if result.facial_transformation_matrixes:
                matrix = np.asarray(result.facial_transformation_matrixes[i], dtype=np.float32).reshape(4, 4)
            else:
                matrix = np.full((4, 4), np.nan, dtype=np.float32)
            faces.append(FaceMesh(lm, scores, matrix, (int(size[0]), int(size[1])), attempt))
        if len(faces) > 1:
            from dataclasses import replace

            areas = [_face_area(f) for f in faces]
            order = sorted(range(len(faces)), key=lambda k: -areas[k])
            faces = [replace(faces[k], faces_found=len(faces)) for k in order]
        return faces[: self.options.num_faces]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this FaceLandmarker is closed")

    def close(self) -> None:
        """Release MediaPipe's graphs. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for graph in (self._strict, self._permissive):
            if graph is not None:
                try:
                    graph.close()
                except Exception:  # a graph that failed may fail to close too: it is gone either way
                    pass
        self._permissive = None

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
