"""Drawing results: the live overlay on video frames (OpenCV) and the timeline plot (matplotlib).

:func:`draw_overlay` draws in place on a BGR frame: the face box or mesh contours, the expression
label with one probability bar per class, eye/mouth/gaze states, the blink count and the frame
rate. :class:`Window` shows frames on screen; :func:`display_problem` says why it cannot, before
anything is opened. :func:`plot_timeline` draws a whole :class:`~meshfer.temporal.Timeline`.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import MeshferError

__all__ = ["OVERLAY_STYLES", "draw_overlay", "display_problem", "Window", "plot_timeline"]

OVERLAY_STYLES = ("box", "mesh")

_GREEN = (80, 220, 80)
_WHITE = (255, 255, 255)
_GREY = (160, 160, 160)
_RED = (60, 60, 230)
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


@lru_cache(maxsize=1)
def _contour_edges() -> np.ndarray:
    """(E, 2) landmark pairs drawn in 'mesh' style: face oval, brows, eyes, irises, lips, nose."""
    from . import topology

    groups = ("face_oval", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye", "left_iris", "right_iris", "lips")
    return np.concatenate([topology.connections(g) for g in groups])


def _text(
    img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5, color: tuple[int, int, int] = _WHITE
) -> None:
    import cv2

    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), (0, 0, 0), -1)
    cv2.putText(img, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def draw_overlay(
    frame: np.ndarray, result: Any, labels: Sequence[str] = (), fps: float | None = None, style: str = "box"
) -> np.ndarray:
    """Draw one :class:`~meshfer.video.FrameResult` on its BGR ``frame`` (in place; returned)."""
    import cv2

    if style not in OVERLAY_STYLES:
        raise ValueError(f"unknown overlay style {style!r}; valid: {', '.join(OVERLAY_STYLES)}")
    h, w = frame.shape[:2]
    record = result.record
    if fps:
        _text(frame, f"{fps:.0f} fps", (w - 80, 20))
    if not record.face or result.mesh is None:
        _text(frame, "no face", (10, 22), 0.6, _GREY)
        return frame

    pts = result.mesh.landmarks[:, :2] * np.array([w, h], dtype=np.float32)
    if style == "mesh":
        lines = pts[_contour_edges()].round().astype(np.int32)
        cv2.polylines(frame, list(lines), False, _GREEN, 1, cv2.LINE_AA)
    x0, y0 = pts.min(axis=0).astype(int)
    x1, y1 = pts.max(axis=0).astype(int)
    if style == "box":
        cv2.rectangle(frame, (x0, y0), (x1, y1), _GREEN, 2)

    probs = record.expression_probabilities
    if record.expression is not None and probs is not None:
        _text(frame, f"{record.expression} {probs[record.expression]:.2f}", (x0, max(18, y0 - 8)), 0.7, _GREEN)
        # One bar per class, top left.
        for i, label in enumerate(labels):
            y = 14 + 16 * i
            p = float(probs.get(label, 0.0))
            color = _GREEN if label == record.expression else _GREY
            cv2.rectangle(frame, (90, y - 9), (90 + int(100 * p), y + 2), color, -1)
            _text(frame, label, (6, y), 0.4)
    status = []
    if record.eyes is not None:
        status.append(f"eyes {record.eyes['left']}/{record.eyes['right']}  blinks {record.blinks}")
    if record.mouth is not None:
        status.append(f"mouth {record.mouth}")
    if record.gaze is not None:
        status.append(f"gaze {record.gaze[0]:+.2f},{record.gaze[1]:+.2f}")
    for i, line in enumerate(status):
        _text(frame, line, (6, h - 10 - 18 * (len(status) - 1 - i)), 0.5)
    return frame


# --------------------------------------------------------------------------------------------------
# Window


def display_problem() -> str | None:
    """Why no overlay window can be opened here (None when one can, as far as can be told)."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 comes with MediaPipe
        return "OpenCV (cv2) is not installed"
    gui = [
        line.split(":", 1)[1].strip()
        for line in cv2.getBuildInformation().splitlines()
        if line.strip().startswith("GUI:")
    ]
    if gui and gui[0].upper() == "NONE":
        return "this OpenCV build has no GUI support (a headless build, e.g. opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


class Window:
    """An OpenCV window; :meth:`show` returns False once the user pressed q / Esc or closed it."""

    def __init__(self, title: str = "meshfer") -> None:
        import cv2

        problem = display_problem()
        if problem is not None:
            raise MeshferError(f"--show needs a display: {problem}; use --output FILE to save the overlay instead")
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise MeshferError(f"--show cannot open a window: {str(exc).strip().splitlines()[-1]}") from None
        self._shown = False

    def show(self, frame: np.ndarray) -> bool:
        import cv2

        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False
        self._shown = True
        return True

    def close(self) -> None:
        import cv2

        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass


# --------------------------------------------------------------------------------------------------
# Timeline plot


def plot_timeline(timeline: Any, summary: Any, path: str | Path | None = None, labels: Sequence[str] = ()) -> Any:
    """Plot a :class:`~meshfer.temporal.Timeline`: expression probabilities over time, eye
    closure with blinks marked, mouth state with speaking spans, and gaze with the attention box
    (panels without data are left out). Saves to ``path`` when given; returns the Figure.

    Uses matplotlib's object API (no pyplot state, no backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = timeline.timestamps
    panels = []
    expr = timeline.expression_probabilities(labels) if labels else np.empty((len(t), 0))
    if labels and not np.isnan(expr).all():
        panels.append("expression")
    closed_l, closed_r = timeline.eye_closed_probability("left"), timeline.eye_closed_probability("right")
    if not (np.isnan(closed_l).all() and np.isnan(closed_r).all()):
        panels.append("eyes")
    mouth = timeline.mouth_open_probability
    if not np.isnan(mouth).all():
        panels.append("mouth")
    gaze = timeline.gaze
    if not np.isnan(gaze).all():
        panels.append("gaze")

    fig = Figure(figsize=(11, 1.2 + 2.0 * max(1, len(panels))), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(1, len(panels)), 1, sharex=True, squeeze=False)[:, 0]
    no_face = ~timeline.face if len(t) else np.zeros(0, bool)

    def shade_no_face(ax: Any) -> None:
        if no_face.any():
            ax.fill_between(
                t,
                0,
                1,
                where=no_face,
                step="mid",
                color="0.85",
                transform=ax.get_xaxis_transform(),
                lw=0,
                label="no face",
            )

    if not panels:
        axes[0].text(
            0.5,
            0.5,
            "no face found" if len(t) and not timeline.face.any() else "no model output to plot",
            ha="center",
            va="center",
            transform=axes[0].transAxes,
        )
    for ax, panel in zip(axes, panels):
        shade_no_face(ax)
        if panel == "expression":
            for k, label in enumerate(labels):
                ax.plot(t, expr[:, k], lw=1.2, label=label)
            ax.set_ylim(0, 1)
            ax.set_ylabel("expression\nprobability")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        elif panel == "eyes":
            ax.plot(t, closed_l, lw=1.0, label="left eye")
            ax.plot(t, closed_r, lw=1.0, label="right eye")
            for i, blink in enumerate(summary.blink_events):
                ax.axvspan(
                    blink.start_s, blink.end_s, color="tab:red", alpha=0.3, lw=0, label="blink" if i == 0 else None
                )
            ax.set_ylim(0, 1)
            ax.set_ylabel("P(eye closed)")
            title = f"{summary.blinks} blinks" if summary.blinks is not None else ""
            if summary.perclos is not None:
                title += f", PERCLOS {100 * summary.perclos:.1f}%"
            ax.set_title(title, fontsize=9, loc="left")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        elif panel == "mouth":
            ax.plot(t, mouth, lw=1.0, color="tab:purple", label="P(mouth open)")
            for i, (a, b) in enumerate(summary.speaking_spans or []):
                ax.axvspan(a, b, color="tab:green", alpha=0.25, lw=0, label="speaking" if i == 0 else None)
            ax.set_ylim(0, 1)
            ax.set_ylabel("mouth")
            if summary.speaking_s is not None:
                ax.set_title(f"speaking {summary.speaking_s:.1f} s", fontsize=9, loc="left")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
        elif panel == "gaze":
            ax.plot(t, gaze[:, 0], lw=1.0, label="gaze x")
            ax.plot(t, gaze[:, 1], lw=1.0, label="gaze y")
            ax.set_ylabel("gaze")
            if summary.attention is not None:
                ax.set_title(f"attention {100 * summary.attention:.1f}%", fontsize=9, loc="left")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel("time (s)")
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    return fig
