"""Video: frames from a camera or a file -> face mesh (MediaPipe VIDEO mode) -> models -> timeline.

:class:`VideoSource` reads BGR frames with timestamps; :class:`VideoAnalyzer` runs one frame at a
time through the landmarker in VIDEO mode (the face is tracked between frames instead of being
detected in each) and the installed models, smooths the expression and gaze, counts blinks as
they happen and appends a :class:`~meshfer.temporal.FrameRecord` to its timeline.
:class:`TimelineCsvWriter` writes one CSV row per frame as it goes, so an interrupted run keeps
its rows. :func:`analyze_video` does it all for a file or camera and returns the timeline and its
summary.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import numpy as np

from .errors import MeshferError
from .landmarks import FaceLandmarker, FaceMesh, LandmarkerOptions, RunningMode
from .predict import EYE_SIDES, FacePrediction, Predictor
from .temporal import (
    EYE_CLOSED,
    MOUTH_OPEN,
    BlinkCounter,
    ExponentialSmoother,
    FrameRecord,
    Summary,
    TemporalConfig,
    Timeline,
    both_closed,
    summarize,
)

__all__ = [
    "VideoError",
    "parse_source",
    "VideoSource",
    "FrameResult",
    "VideoAnalyzer",
    "TimelineCsvWriter",
    "open_video_writer",
    "free_bytes",
    "video_file_problem",
    "analyze_video",
]

#: Frame rate assumed for files that do not state one.
FALLBACK_FPS = 30.0


class VideoError(MeshferError):
    """A camera or video file that cannot be opened or written."""


def parse_source(source: str | int) -> str | int:
    """A camera index (``"0"`` -> 0) or a file path (kept as a string)."""
    if isinstance(source, int):
        return source
    text = str(source).strip()
    return int(text) if text.isdigit() else text


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's own log messages off for the duration (its level is restored afterwards)."""
    import cv2

    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(level)


class VideoSource:
    """BGR frames (and timestamps in seconds) from a camera index or a video file (OpenCV).

    File timestamps come from the frame number and the file's frame rate; camera timestamps from
    the clock. ``width``/``height`` ask a camera for a capture size (files ignore them).
    """

    def __init__(self, source: str | int, width: int | None = None, height: int | None = None) -> None:
        import cv2

        self.source = parse_source(source)
        self.is_camera = isinstance(self.source, int)
        if self.is_camera:
            self.name = f"camera {self.source}"
            with _quiet_opencv():  # OpenCV logs every backend it tried; the error below says it all
                self._cap = cv2.VideoCapture(self.source)
            if width:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            if height:
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            if not self._cap.isOpened():
                raise VideoError(f"{self.name}: cannot open the camera (no such camera, or it is busy)")
        else:
            path = Path(self.source)
            self.name = str(path)
            if not path.exists():
                raise VideoError(f"{path}: no such video file")
            if path.is_dir():
                raise VideoError(f"{path}: is a folder, not a video file")
            with _quiet_opencv():
                self._cap = cv2.VideoCapture(str(path))
            if not self._cap.isOpened():
                raise VideoError(f"{path}: cannot open as a video (unsupported or corrupt file)")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps < 1000.0 else FALLBACK_FPS
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        #: Frames in a file (as its header says; None for cameras or when unknown).
        self.frame_count = count if count > 0 and not self.is_camera else None
        self._buffer: np.ndarray | None = None
        self._index = 0
        self._t0: float | None = None

    def read(self) -> tuple[np.ndarray, float] | None:
        """The next frame (BGR; the array is reused by the next call) and its timestamp, or None
        at the end of a file (or when a camera stops delivering)."""
        ok, frame = self._cap.read(self._buffer)
        if not ok or frame is None:
            return None
        self._buffer = frame
        if self.is_camera:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            t = now - self._t0
        else:
            t = self._index / self.fps
        self._index += 1
        return frame, t

    def __iter__(self) -> Iterator[tuple[np.ndarray, float]]:
        while (item := self.read()) is not None:
            yield item

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FrameResult:
    """One analysed frame: its record, the mesh and the models' raw outputs (None without a
    face; see :meth:`Predictor.predict_arrays`), and the seconds spent in the landmarker (with
    the face crop it cuts), in features + models + temporal, and in the crop alone.
    :attr:`prediction` gives the outputs as a :class:`FacePrediction`."""

    record: FrameRecord
    mesh: FaceMesh | None
    outputs: dict[str, np.ndarray] | None
    landmarker_s: float
    models_s: float
    predictor: Predictor | None = dataclasses.field(default=None, repr=False)
    crop_s: float = 0.0

    @property
    def prediction(self) -> FacePrediction | None:
        """The unsmoothed prediction of this frame (None without a face); built on first use,
        so that the per-frame loop does not pay for objects nobody reads."""
        if self.outputs is None or self.predictor is None:
            return None
        return self.predictor.to_predictions(self.outputs)[0]


class VideoAnalyzer:
    """Analyses the frames of one stream, in order (see the module docstring).

    ``predictor`` gives the models (its landmarker is not used); ``options`` configure the
    VIDEO-mode landmarker this analyzer owns. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        predictor: Predictor | None = None,
        options: LandmarkerOptions | None = None,
        config: TemporalConfig | None = None,
    ) -> None:
        self.predictor = predictor if predictor is not None else Predictor()
        self.config = config or TemporalConfig()
        options = options or LandmarkerOptions()
        crop = self.predictor.crop_spec or options.crop
        self.landmarker = FaceLandmarker(dataclasses.replace(options, running_mode=RunningMode.VIDEO, crop=crop))
        models = self.predictor.models
        self.expression_labels: list[str] = list(models["expression"].card.labels) if "expression" in models else []
        self.tasks = set(models)
        self.timeline = Timeline()
        self._expression = ExponentialSmoother(self.config.smoothing)
        self._gaze = ExponentialSmoother(self.config.smoothing)
        self.blinks = BlinkCounter(self.config.min_closed_frames, self.config.min_open_frames, self.config.max_blink_s)
        self._rgb: np.ndarray | None = None
        self._last_ms = -1

    def process(self, frame_bgr: np.ndarray, timestamp_s: float) -> FrameResult:
        """Analyse the next frame (BGR uint8, as OpenCV reads it); timestamps must not go back."""
        import cv2

        if self._rgb is None or self._rgb.shape != frame_bgr.shape:
            self._rgb = np.empty_like(frame_bgr)
        cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB, dst=self._rgb)
        ts_ms = max(int(round(timestamp_s * 1000.0)), self._last_ms + 1)  # MediaPipe wants strictly increasing ms
        self._last_ms = ts_ms

        crop_before = self.landmarker.crop_seconds
        t0 = time.perf_counter()
        faces = self.landmarker.detect_for_video(self._rgb, ts_ms)
        t1 = time.perf_counter()
        crop_s = self.landmarker.crop_seconds - crop_before
        if not faces:
            record = self.push(timestamp_s, None)
            return FrameResult(record, None, None, t1 - t0, time.perf_counter() - t1, crop_s=crop_s)
        mesh = faces[0]
        outputs = self.predictor.predict_arrays(
            mesh.landmarks[None], mesh.blendshapes[None], np.array([mesh.image_size], dtype=np.float32),
            None if mesh.crop is None else mesh.crop[None],
        )
        record = self.push(timestamp_s, outputs)
        return FrameResult(record, mesh, outputs, t1 - t0, time.perf_counter() - t1, self.predictor, crop_s)

    def push(self, timestamp_s: float, outputs: dict[str, np.ndarray] | None) -> FrameRecord:
        """Add one frame to the timeline from its face's model outputs (:meth:`Predictor.predict_arrays`
        for one face; None when no face was found): smoothing, labels and the blink count. Its record."""
        index = len(self.timeline)
        if outputs is None:
            self._expression.reset()
            self._gaze.reset()
            self.blinks.update(None, timestamp_s)
            record = FrameRecord(index, float(timestamp_s), False, blinks=self.blinks.count)
        else:
            record = self._record(index, float(timestamp_s), outputs)
        self.timeline.append(record)
        return record

    def _record(self, index: int, t: float, outputs: dict[str, np.ndarray]) -> FrameRecord:
        record = FrameRecord(index, t, True)
        models = self.predictor.models
        if "expression" in outputs:
            labels = self.expression_labels
            smoothed = self._expression.update(outputs["expression"][0])
            assert smoothed is not None
            record.expression_probabilities = dict(zip(labels, smoothed.tolist()))
            record.expression = labels[int(np.argmax(smoothed))]
        if "eye" in outputs:
            labels = models["eye"].card.labels
            proba = outputs["eye"][0]  # (2, C): [left, right]
            record.eyes = {side: labels[int(np.argmax(p))] for side, p in zip(EYE_SIDES, proba)}
            closed = labels.index(EYE_CLOSED) if EYE_CLOSED in labels else None
            record.eye_closed = {
                side: float(p[closed]) if closed is not None else float("nan") for side, p in zip(EYE_SIDES, proba)
            }
        if "gaze" in outputs:
            targets = models["gaze"].card.targets
            g = self._gaze.update(outputs["gaze"][0][[targets.index("x"), targets.index("y")]])
            assert g is not None
            record.gaze = (float(g[0]), float(g[1]))
        if "mouth" in outputs:
            labels = models["mouth"].card.labels
            proba = outputs["mouth"][0]
            record.mouth = labels[int(np.argmax(proba))]
            record.mouth_open = float(proba[labels.index(MOUTH_OPEN)]) if MOUTH_OPEN in labels else float("nan")
        closed = both_closed(record.eye_is_closed("left"), record.eye_is_closed("right"))
        self.blinks.update(closed, t)
        record.blinks = self.blinks.count
        return record

    def summary(self, processing_fps: float | None = None, interrupted: bool = False) -> Summary:
        """The summary of the frames analysed so far."""
        return summarize(self.timeline, self.config, self.expression_labels, processing_fps, interrupted)

    def close(self) -> None:
        self.landmarker.close()

    def __enter__(self) -> "VideoAnalyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------------
# Output files


class TimelineCsvWriter:
    """Writes one CSV row per frame as frames come (flushed at least every ``flush_s`` seconds).

    Columns: ``frame, timestamp_s, face``, then for each task with a model: ``expression`` and
    ``expression_<label>`` (smoothed probabilities); ``eye_left, eye_right`` (labels),
    ``eye_left_closed, eye_right_closed`` (probability of 'closed'), ``blinks`` (count so far);
    ``gaze_x, gaze_y`` (smoothed); ``mouth`` (label), ``mouth_open`` (probability of 'open').
    ``face`` is ``true``/``false``; a frame without a face leaves the task columns empty.
    """

    def __init__(
        self, path: str | Path, expression_labels: Sequence[str], tasks: set[str] | Sequence[str], flush_s: float = 0.25
    ) -> None:
        self.path = Path(path)
        self.expression_labels = list(expression_labels)
        tasks = set(tasks)
        self.columns = ["frame", "timestamp_s", "face"]
        if "expression" in tasks:
            self.columns += ["expression"] + [f"expression_{k}" for k in self.expression_labels]
        self._eyes = "eye" in tasks
        if self._eyes:
            self.columns += ["eye_left", "eye_right", "eye_left_closed", "eye_right_closed", "blinks"]
        self._gaze = "gaze" in tasks
        if self._gaze:
            self.columns += ["gaze_x", "gaze_y"]
        self._mouth = "mouth" in tasks
        if self._mouth:
            self.columns += ["mouth", "mouth_open"]
        self._has_expression = "expression" in tasks
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = open(self.path, "w", newline="", encoding="utf-8")
        except OSError as exc:
            raise VideoError(f"{self.path}: cannot write the CSV file ({exc.strerror or exc})") from None
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.columns)
        self.flush_s = flush_s
        self._last_flush = time.monotonic()
        self.rows = 0

    @staticmethod
    def _num(value: float | None, digits: int = 4) -> str:
        return "" if value is None or value != value else f"{value:.{digits}f}"

    def write(self, r: FrameRecord) -> None:
        row: list[Any] = [r.frame, f"{r.timestamp_s:.3f}", "true" if r.face else "false"]
        if self._has_expression:
            probs = r.expression_probabilities
            row.append(r.expression or "")
            row += [self._num(probs[k]) if probs else "" for k in self.expression_labels]
        if self._eyes:
            eyes, closed = r.eyes, r.eye_closed
            row += [eyes["left"] if eyes else "", eyes["right"] if eyes else ""]
            row += [self._num(closed["left"]) if closed else "", self._num(closed["right"]) if closed else ""]
            row.append(r.blinks)
        if self._gaze:
            row += [self._num(r.gaze[0]), self._num(r.gaze[1])] if r.gaze else ["", ""]
        if self._mouth:
            row += [r.mouth or "", self._num(r.mouth_open)]
        self._writer.writerow(row)
        self.rows += 1
        now = time.monotonic()
        if now - self._last_flush >= self.flush_s:
            self._file.flush()
            self._last_flush = now

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> "TimelineCsvWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video_writer(path: str | Path, fps: float, size: tuple[int, int]) -> Any:
    """An OpenCV VideoWriter (MPEG-4, ``mp4v``) for BGR frames of ``size`` (width, height)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (int(size[0]), int(size[1])))
    if not writer.isOpened():
        raise VideoError(
            f"{path}: cannot write a video file here (OpenCV has no MPEG-4 writer, or the folder is not writable)"
        )
    return writer


def free_bytes(path: str | Path) -> int | None:
    """Free space on the file system that holds ``path`` (its folder), or None when unknown."""
    import shutil

    try:
        return shutil.disk_usage(Path(path).parent or ".").free
    except OSError:
        return None


def video_file_problem(path: str | Path, frames: int) -> str | None:
    """Why the video file ``path``, to which ``frames`` frames were written, is not a complete
    video (OpenCV's writer reports no write errors: a full disk leaves a file that does not open,
    or that holds fewer frames), or None when it reads back whole."""
    import cv2

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return "the file was not written"
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return "the file was written incompletely and does not open as a video"
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if count < frames:
        return f"the file holds {count} of the {frames} frames written"
    return None


# --------------------------------------------------------------------------------------------------


def analyze_video(
    source: str | int,
    predictor: Predictor | None = None,
    options: LandmarkerOptions | None = None,
    config: TemporalConfig | None = None,
    max_frames: int | None = None,
    on_frame: Callable[[np.ndarray, FrameResult], None] | None = None,
) -> tuple[Timeline, Summary]:
    """Analyse a video file (or camera index) to the end (or ``max_frames``); returns the timeline
    and its summary. ``on_frame(frame_bgr, result)`` is called after each frame."""
    with VideoSource(source) as src, VideoAnalyzer(predictor, options, config) as analyzer:
        t0 = time.perf_counter()
        for frame, t in src:
            result = analyzer.process(frame, t)
            if on_frame is not None:
                on_frame(frame, result)
            if max_frames is not None and len(analyzer.timeline) >= max_frames:
                break
        elapsed = time.perf_counter() - t0
        n = len(analyzer.timeline)
        return analyzer.timeline, analyzer.summary(n / elapsed if elapsed > 0 and n else None)
