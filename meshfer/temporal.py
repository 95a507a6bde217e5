"""Results over time for a stream of frames: smoothing, blinks, PERCLOS, speaking time, attention.

Everything here is pure Python/NumPy over per-frame values, so it is tested on synthetic
sequences. A frame without a face (or without the model a measure needs) is ``None`` / NaN: it
is skipped, never counted as open, closed, attentive or not.

Definitions (the defaults are in :class:`TemporalConfig`):

- **Smoothing**: an exponential moving average ``s_t = alpha * p_t + (1 - alpha) * s_{t-1}`` of
  the expression probabilities and of the gaze; it restarts after a frame without a face.
- **Blink**: the eye seen open, then closed for at least ``min_closed_frames`` frames, then open
  again for ``min_open_frames`` frames in a row. Open runs shorter than that inside a closure do
  not end it (debouncing classifier flicker); a closure that never reopens is not a blink. When
  ``max_blink_s`` is set, longer closures are counted as long closures, not blinks.
  ``blinks`` counts closures of both eyes at once; each eye is also counted on its own.
- **PERCLOS**: the share of frames (with the eyes' state known) in which both eyes are closed.
- **Speaking time**: mouth open/closed changes (each new state held ``min_mouth_frames`` frames)
  closer than ``max_speech_gap_s`` to each other are chained; a chain of at least
  ``min_speech_changes`` changes is a speaking span, from its first change to its last.
- **Attention**: the share of frames (with a gaze estimate) whose gaze (x, y) lies inside the
  central :class:`AttentionBox`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "EYE_CLOSED",
    "MOUTH_OPEN",
    "AttentionBox",
    "TemporalConfig",
    "ExponentialSmoother",
    "smooth",
    "Blink",
    "BlinkCounter",
    "count_blinks",
    "both_closed",
    "perclos",
    "mouth_changes",
    "speaking_spans",
    "attention_share",
    "expression_shares",
    "FrameRecord",
    "Timeline",
    "Summary",
    "summarize",
]

#: The eye-state label that counts as closed, and the mouth-state label that counts as open.
EYE_CLOSED = "closed"
MOUTH_OPEN = "open"


#: The range of the gaze on each axis (MediaPipe's blendshape gaze; the gaze model's outputs are
#: clipped to it).
GAZE_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class AttentionBox:
    """The central gaze box: gaze x in [xmin, xmax] and y in [ymin, ymax] counts as attentive.

    Gaze is MediaPipe's blendshape gaze (about -1 to 1 on each axis, 0 looking straight ahead).
    The default (+-0.4) is a guess for a camera just above or below the screen; calibrate it for
    yours.
    """

    xmin: float = -0.4
    xmax: float = 0.4
    ymin: float = -0.4
    ymax: float = 0.4

    def __post_init__(self) -> None:
        if not (self.xmin < self.xmax and self.ymin < self.ymax):
            raise ValueError(f"empty attention box: x [{self.xmin}, {self.xmax}], y [{self.ymin}, {self.ymax}]")

    @classmethod
    def parse(cls, text: str) -> "AttentionBox":
        """``"X,Y"`` (half-widths of a centred box) or ``"XMIN,XMAX,YMIN,YMAX"``. Refuses (ValueError)
        an empty box, and one that covers the whole gaze range (:data:`GAZE_RANGE`: every frame
        attentive, as ``5,1`` read as a point would give) or lies outside it."""
        try:
            values = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise ValueError(f"attention box {text!r}: expected numbers 'X,Y' or 'XMIN,XMAX,YMIN,YMAX'") from None
        if len(values) not in (2, 4):
            raise ValueError(f"attention box {text!r}: expected 2 numbers 'X,Y' or 4 'XMIN,XMAX,YMIN,YMAX'")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"attention box {text!r}: the numbers must be finite")
        if len(values) == 2:
            x, y = (abs(v) for v in values)
            if x == 0 or y == 0:
                raise ValueError(
                    f"attention box {text!r}: an empty box (X,Y are the half-widths of a box centred on 0, not "
                    "a point; both must be above 0, e.g. 0.4,0.4)"
                )
            box = cls(-x, x, -y, y)
        else:
            xmin, xmax, ymin, ymax = values
            if not (xmin < xmax and ymin < ymax):
                raise ValueError(
                    f"attention box {text!r}: an empty box (XMIN must be below XMAX and YMIN below YMAX)"
                )
            box = cls(*values)
        lo, hi = GAZE_RANGE
        if box.xmin <= lo and box.xmax >= hi and box.ymin <= lo and box.ymax >= hi:
            raise ValueError(
                f"attention box {text!r}: covers the whole gaze range ({lo:g} to {hi:g} on each axis), so every "
                "frame would count as attentive; X,Y are the half-widths of a box centred on 0, not a point "
                "(e.g. 0.4,0.4)"
            )
        if box.xmax <= lo or box.xmin >= hi or box.ymax <= lo or box.ymin >= hi:
            raise ValueError(
                f"attention box {text!r}: lies outside the gaze range ({lo:g} to {hi:g} on each axis), so no "
                "frame could count as attentive"
            )
        return box

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Element-wise: inside the box (False for NaN)."""
        return (x >= self.xmin) & (x <= self.xmax) & (y >= self.ymin) & (y <= self.ymax)


@dataclass(frozen=True)
class TemporalConfig:
    """Parameters of the temporal measures (see the module docstring)."""

    smoothing: float = 0.3
    min_closed_frames: int = 1
    min_open_frames: int = 2
    max_blink_s: float | None = None
    min_mouth_frames: int = 2
    max_speech_gap_s: float = 1.0
    min_speech_changes: int = 3
    attention_box: AttentionBox = field(default_factory=AttentionBox)

    def __post_init__(self) -> None:
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1] (1 = no smoothing), got {self.smoothing}")
        for name in ("min_closed_frames", "min_open_frames", "min_mouth_frames", "min_speech_changes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        _check_seconds("max_blink_s", self.max_blink_s, optional=True)
        _check_seconds("max_speech_gap_s", self.max_speech_gap_s)


def _check_seconds(name: str, value: float | None, optional: bool = False) -> None:
    """A duration must be a positive, finite number of seconds (None allowed when ``optional``)."""
    import math

    if value is None and optional:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Smoothing


class ExponentialSmoother:
    """Streaming exponential moving average of a vector; ``update(None)`` (no face) restarts it."""

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._state: np.ndarray | None = None

    def update(self, values: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
        """The smoothed vector after this frame (None when ``values`` is None)."""
        if values is None:
            self._state = None
            return None
        x = np.asarray(values, dtype=np.float64)
        if self._state is None or self._state.shape != x.shape:
            self._state = x.copy()
        else:
            self._state *= 1.0 - self.alpha
            self._state += self.alpha * x
        return self._state.copy()

    def reset(self) -> None:
        self._state = None


def smooth(values: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average down the rows of a (T, K) array; NaN rows (no face) stay NaN
    and restart the average."""
    values = np.asarray(values, dtype=np.float64)
    flat = values.reshape(len(values), -1)
    out = np.full_like(flat, np.nan)
    smoother = ExponentialSmoother(alpha)
    for t, row in enumerate(flat):
        s = smoother.update(None if np.isnan(row).any() else row)
        if s is not None:
            out[t] = s
    return out.reshape(values.shape)


# --------------------------------------------------------------------------------------------------
# Blinks and PERCLOS


@dataclass(frozen=True)
class Blink:
    """One closure of the eyes: first closed frame, and the first frame of the open run that ended it."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class BlinkCounter:
    """Streaming, debounced blink counter for one eye (or for 'both eyes closed').

    Feed one state per frame with :meth:`update` (True closed, False open, None unknown); it
    returns the :class:`Blink` completed at that frame, if any.
    """

    def __init__(self, min_closed_frames: int = 1, min_open_frames: int = 2, max_blink_s: float | None = None) -> None:
        if min_closed_frames < 1 or min_open_frames < 1:
            raise ValueError("min_closed_frames and min_open_frames must be at least 1")
        _check_seconds("max_blink_s", max_blink_s, optional=True)
        self.min_closed_frames = min_closed_frames
        self.min_open_frames = min_open_frames
        self.max_blink_s = max_blink_s
        self.blinks: list[Blink] = []
        self.long_closures: list[Blink] = []
        self._seen_open = False  # open confirmed at least once (a blink starts from open eyes)
        self._closed_frames = 0  # closed frames since open was last confirmed
        self._closure_start: tuple[int, float] | None = None
        self._open_run = 0
        self._open_start: tuple[int, float] | None = None
        self._frame = -1

    @property
    def count(self) -> int:
        return len(self.blinks)

    def update(self, closed: bool | None, timestamp_s: float | None = None) -> Blink | None:
        self._frame += 1
        t = float(self._frame if timestamp_s is None else timestamp_s)
        if closed is None:
            return None
        if closed:
            if self._closed_frames == 0:
                self._closure_start = (self._frame, t)
            self._closed_frames += 1
            self._open_run = 0
            self._open_start = None
            return None
        if self._open_run == 0:
            self._open_start = (self._frame, t)
        self._open_run += 1
        if self._open_run < self.min_open_frames:
            return None
        # Open confirmed: a pending closure ends here.
        event = None
        if self._closed_frames and self._seen_open and self._closed_frames >= self.min_closed_frames:
            assert self._closure_start is not None and self._open_start is not None
            event = Blink(self._closure_start[0], self._open_start[0], self._closure_start[1], self._open_start[1])
            if self.max_blink_s is not None and event.duration_s > self.max_blink_s:
                self.long_closures.append(event)
                event = None
            else:
                self.blinks.append(event)
        self._closed_frames = 0
        self._closure_start = None
        self._seen_open = True
        return event


def count_blinks(
    closed: Iterable[bool | None],
    timestamps: Sequence[float] | None = None,
    min_closed_frames: int = 1,
    min_open_frames: int = 2,
    max_blink_s: float | None = None,
) -> list[Blink]:
    """The blinks in a sequence of eye states (True closed, False open, None unknown)."""
    counter = BlinkCounter(min_closed_frames, min_open_frames, max_blink_s)
    for i, state in enumerate(closed):
        counter.update(state, None if timestamps is None else timestamps[i])
    return counter.blinks


def both_closed(left: bool | None, right: bool | None) -> bool | None:
    """Both eyes closed (None when either state is unknown)."""
    if left is None or right is None:
        return None
    return left and right


def perclos(closed: Iterable[bool | None]) -> float | None:
    """PERCLOS: closed frames / frames with a known state (None when no state is known)."""
    known = [c for c in closed if c is not None]
    return sum(bool(c) for c in known) / len(known) if known else None


# --------------------------------------------------------------------------------------------------
# Speech


def mouth_changes(mouth_open: Sequence[bool | None], timestamps: Sequence[float], min_frames: int = 2) -> list[float]:
    """Times at which the mouth state changes, each new state held at least ``min_frames`` frames
    (with a known state) in a row; the time is that of the new state's first frame."""
    changes: list[float] = []
    state: bool | None = None  # the last confirmed state
    run_state: bool | None = None
    run_len = 0
    run_start = 0.0
    for value, t in zip(mouth_open, timestamps):
        if value is None:
            continue
        if value == run_state:
            run_len += 1
        else:
            run_state, run_len, run_start = value, 1, float(t)
        if run_len == min_frames and run_state != state:
            if state is not None:
                changes.append(run_start)
            state = run_state
    return changes


def speaking_spans(
    mouth_open: Sequence[bool | None],
    timestamps: Sequence[float],
    min_frames: int = 2,
    max_gap_s: float = 1.0,
    min_changes: int = 3,
) -> list[tuple[float, float]]:
    """(start, end) times of the spans in which the mouth alternates open/closed."""
    changes = mouth_changes(mouth_open, timestamps, min_frames)
    spans: list[tuple[float, float]] = []
    chain: list[float] = []
    for t in changes + [math.inf]:
        if chain and t - chain[-1] > max_gap_s:
            if len(chain) >= min_changes:
                spans.append((chain[0], chain[-1]))
            chain = []
        chain.append(t)
    return spans


# --------------------------------------------------------------------------------------------------
# Attention and expression


def attention_share(gaze: np.ndarray, box: AttentionBox) -> float | None:
    """Share of frames with a gaze estimate ((T, 2) x, y; NaN when unknown) inside ``box``."""
    gaze = np.asarray(gaze, dtype=np.float64).reshape(-1, 2)
    known = ~np.isnan(gaze).any(axis=1)
    if not known.any():
        return None
    return float(box.contains(gaze[known, 0], gaze[known, 1]).mean())


def expression_shares(labels: Iterable[str | None], order: Sequence[str] = ()) -> dict[str, float]:
    """Share of each expression among the frames with one (labels in ``order`` first, all listed)."""
    known = [label for label in labels if label is not None]
    names = list(order) + sorted({label for label in known} - set(order))
    return {name: (known.count(name) / len(known) if known else 0.0) for name in names}


# --------------------------------------------------------------------------------------------------
# Per-frame records and the summary


@dataclass
class FrameRecord:
    """What was found in one frame. Task fields are None when no face was found or no model of
    that task is installed. Probabilities of the expression and the gaze are smoothed."""

    frame: int
    timestamp_s: float
    face: bool
    expression: str | None = None
    expression_probabilities: dict[str, float] | None = None
    eyes: dict[str, str] | None = None  # subject's "left" / "right" -> label
    eye_closed: dict[str, float] | None = None  # probability of the 'closed' label per eye
    gaze: tuple[float, float] | None = None
    mouth: str | None = None
    mouth_open: float | None = None  # probability of the 'open' label
    blinks: int = 0  # blinks (both eyes) counted so far

    def eye_is_closed(self, side: str) -> bool | None:
        return None if self.eyes is None else self.eyes[side] == EYE_CLOSED

    @property
    def eyes_closed(self) -> bool | None:
        return both_closed(self.eye_is_closed("left"), self.eye_is_closed("right"))

    @property
    def mouth_is_open(self) -> bool | None:
        return None if self.mouth is None else self.mouth == MOUTH_OPEN


class Timeline:
    """The :class:`FrameRecord` of every frame of a stream, in order, with column views."""

    def __init__(self, records: Iterable[FrameRecord] = ()) -> None:
        self.records: list[FrameRecord] = list(records)

    def append(self, record: FrameRecord) -> None:
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def timestamps(self) -> np.ndarray:
        return np.array([r.timestamp_s for r in self.records], dtype=np.float64)

    @property
    def face(self) -> np.ndarray:
        return np.array([r.face for r in self.records], dtype=bool)

    def expression_probabilities(self, labels: Sequence[str]) -> np.ndarray:
        """(T, K) smoothed probabilities in ``labels`` order, NaN rows without a face/model."""
        out = np.full((len(self.records), len(labels)), np.nan)
        for i, r in enumerate(self.records):
            if r.expression_probabilities is not None:
                out[i] = [r.expression_probabilities.get(k, np.nan) for k in labels]
        return out

    @property
    def gaze(self) -> np.ndarray:
        """(T, 2) smoothed gaze x, y (NaN when unknown)."""
        return np.array(
            [r.gaze if r.gaze is not None else (np.nan, np.nan) for r in self.records], dtype=np.float64
        ).reshape(-1, 2)

    def eye_closed_probability(self, side: str) -> np.ndarray:
        return np.array(
            [r.eye_closed[side] if r.eye_closed is not None else np.nan for r in self.records], dtype=np.float64
        )

    @property
    def mouth_open_probability(self) -> np.ndarray:
        return np.array([np.nan if r.mouth_open is None else r.mouth_open for r in self.records], dtype=np.float64)

    def frame_interval(self) -> float:
        """Median time between frames (0 for fewer than two frames)."""
        t = self.timestamps
        return float(np.median(np.diff(t))) if len(t) > 1 else 0.0


@dataclass
class Summary:
    """Totals of one stream. Measures whose model is missing (or that saw no face) are None."""

    frames: int
    faces: int
    duration_s: float
    expression_shares: dict[str, float]
    blinks: int | None
    blinks_left: int | None
    blinks_right: int | None
    long_closures: int | None
    blinks_per_minute: float | None
    perclos: float | None
    speaking_s: float | None
    speaking_spans: list[tuple[float, float]] | None
    attention: float | None
    blink_events: list[Blink] = field(default_factory=list)
    processing_fps: float | None = None
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blink_events"] = [[b.start_s, b.end_s] for b in self.blink_events]
        d["speaking_spans"] = None if self.speaking_spans is None else [list(s) for s in self.speaking_spans]
        return d

    def format(self) -> str:
        """A readable multi-line summary."""

        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        share = self.faces / self.frames if self.frames else 0.0
        lines = [
            f"frames:          {self.frames} ({self.duration_s:.1f} s"
            + (f", processed at {self.processing_fps:.1f} fps" if self.processing_fps else "")
            + ")",
            f"faces found:     {self.faces} ({pct(share)})",
        ]
        if self.expression_shares:
            shares = ", ".join(
                f"{k} {pct(v)}" for k, v in sorted(self.expression_shares.items(), key=lambda kv: -kv[1]) if v > 0
            )
            lines.append(f"expressions:     {shares or 'n/a'}")
        else:
            lines.append("expressions:     n/a (no expression model)")
        if self.blinks is None:
            lines.append("blinks:          n/a (no eye model or no face)")
        else:
            bpm = "n/a" if self.blinks_per_minute is None else f"{self.blinks_per_minute:.1f}"
            extra = f", {self.long_closures} long closures" if self.long_closures else ""
            lines.append(
                f"blinks:          {self.blinks} ({bpm} per minute; "
                f"left eye {self.blinks_left}, right eye {self.blinks_right}{extra})"
            )
        lines.append(f"PERCLOS:         {pct(self.perclos)}")
        if self.speaking_s is None:
            lines.append("speaking time:   n/a (no mouth model or no face)")
        else:
            lines.append(f"speaking time:   {self.speaking_s:.1f} s in {len(self.speaking_spans or [])} spans")
        lines.append(f"attention:       {pct(self.attention)}")
        if self.interrupted:
            lines.append("(stopped early: these figures cover the frames processed)")
        return "\n".join(lines)


def summarize(
    timeline: Timeline,
    config: TemporalConfig | None = None,
    expression_labels: Sequence[str] = (),
    processing_fps: float | None = None,
    interrupted: bool = False,
) -> Summary:
    """The :class:`Summary` of a timeline."""
    config = config or TemporalConfig()
    records = timeline.records
    t = timeline.timestamps
    dt = timeline.frame_interval()
    duration = float(t[-1] - t[0] + dt) if len(t) else 0.0

    expressions = [r.expression for r in records]
    shares = expression_shares(expressions, expression_labels) if any(e is not None for e in expressions) else {}

    def blink_count(states: list[bool | None]) -> BlinkCounter:
        counter = BlinkCounter(config.min_closed_frames, config.min_open_frames, config.max_blink_s)
        for state, ts in zip(states, t):
            counter.update(state, ts)
        return counter

    both = [r.eyes_closed for r in records]
    eyes_known = sum(s is not None for s in both)
    if eyes_known:
        both_counter = blink_count(both)
        left = blink_count([r.eye_is_closed("left") for r in records]).count
        right = blink_count([r.eye_is_closed("right") for r in records]).count
        observed_min = eyes_known * dt / 60.0
        bpm = both_counter.count / observed_min if observed_min > 0 else None
        blinks, events, long_closures = both_counter.count, both_counter.blinks, len(both_counter.long_closures)
    else:
        blinks = left = right = long_closures = None
        bpm, events = None, []

    mouth = [r.mouth_is_open for r in records]
    if any(m is not None for m in mouth):
        spans = speaking_spans(mouth, t, config.min_mouth_frames, config.max_speech_gap_s, config.min_speech_changes)
        speaking = float(sum(b - a for a, b in spans))
    else:
        spans, speaking = None, None

    return Summary(
        frames=len(records),
        faces=int(sum(r.face for r in records)),
        duration_s=duration,
        expression_shares=shares,
        blinks=blinks,
        blinks_left=left,
        blinks_right=right,
        long_closures=long_closures,
        blinks_per_minute=bpm,
        perclos=perclos(both),
        speaking_s=speaking,
        speaking_spans=spans,
        attention=attention_share(timeline.gaze, config.attention_box),
        blink_events=events,
        processing_fps=processing_fps,
        interrupted=interrupted,
    )
