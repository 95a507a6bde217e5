"""meshfer video: expression, eyes, gaze and mouth over time for a camera or a video file."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from ._common import landmarker_options, model_choice, positive_float, positive_int, print_json, warn


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError("must be in (0, 1]; 1 = no smoothing")
    return value


def _box(text: str) -> Any:
    from ..temporal import AttentionBox

    try:
        return AttentionBox.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "video",
        parents=parents,
        help="expression, blinks, drowsiness, speaking time and attention in a video or live camera",
        description="Analyse a camera (SOURCE is its index, e.g. 0) or a video file frame by frame: MediaPipe "
        "tracks the face mesh (VIDEO mode) and the installed models give the expression, eye states, gaze and "
        "mouth state. Ends with a summary: faces found, expression shares, blinks and blinks per minute, PERCLOS "
        "(share of time with both eyes closed), speaking time and attention (share of frames with the gaze in "
        "a central box). Ctrl-C or SIGTERM (or q in the --show window) stops and still writes everything "
        "gathered; the exit status is then 130 or 143 (0 for q), as for the other commands.",
    )
    p.add_argument("source", metavar="SOURCE", help="camera index (0, 1, ...) or video file")
    p.add_argument("--show", action="store_true", help="show the overlay in a window (needs a display)")
    p.add_argument("--output", metavar="FILE", help="write the video with the overlay (MPEG-4 .mp4)")
    p.add_argument(
        "--csv",
        metavar="FILE",
        help="write one row per frame (timestamp, face, expression and probabilities, eyes, gaze, mouth)",
    )
    p.add_argument("--plot", metavar="FILE", help="write a timeline plot (.png, .svg, .pdf)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.add_argument(
        "--smoothing",
        type=_alpha,
        default=0.3,
        metavar="ALPHA",
        help="exponential moving average weight of each new frame for the expression and gaze "
        "(default 0.3; 1 = no smoothing)",
    )
    p.add_argument(
        "--attention-box",
        type=_box,
        metavar="X,Y | XMIN,XMAX,YMIN,YMAX",
        help="gaze box counted as attentive: X,Y are the half-widths of a box centred on 0 (not a point), "
        "or give its four edges; the gaze runs from -1 to 1 on each axis (default -0.4,0.4,-0.4,0.4)",
    )
    p.add_argument(
        "--max-blink",
        type=positive_float,
        metavar="SECONDS",
        help="closures longer than this are long closures, not blinks (default: no limit)",
    )
    p.add_argument("--overlay", choices=("box", "mesh"), default="box", help="draw the face box or mesh contours")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames")
    p.add_argument("--width", type=positive_int, help="camera capture width (cameras only)")
    p.add_argument("--height", type=positive_int, help="camera capture height (cameras only)")
    p.add_argument("--model", default="default", help="expression model name or card path")
    p.add_argument("--eyes", type=model_choice, default="default", help="eye-state model, or 'none'")
    p.add_argument("--gaze", type=model_choice, default="default", help="gaze model, or 'none'")
    p.add_argument("--mouth", type=model_choice, default="default", help="mouth-state model, or 'none'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


class _Stop:
    """SIGINT / SIGTERM set a flag that the frame loop checks; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the first signal received
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "_Stop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: keep the default behaviour
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    from ..errors import MeshferError
    from ..temporal import AttentionBox, TemporalConfig

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise MeshferError("--plot needs matplotlib (pip install matplotlib)") from None
    _check_outputs(args)  # before any frame is read: a bad path must not cost the analysis
    window = None
    if args.show:
        from ..overlay import Window

        window = Window("meshfer")  # fails with a clear message when there is no display
    config = TemporalConfig(
        smoothing=args.smoothing, attention_box=args.attention_box or AttentionBox(), max_blink_s=args.max_blink
    )

    from ..predict import Predictor
    from ..video import TimelineCsvWriter, VideoAnalyzer, VideoSource, free_bytes, open_video_writer, video_file_problem

    source = VideoSource(args.source, args.width, args.height)
    predictor = Predictor(expression=args.model, eyes=args.eyes, gaze=args.gaze, mouth=args.mouth)
    analyzer = VideoAnalyzer(predictor, landmarker_options(args), config)
    labels = analyzer.expression_labels
    if not predictor.models:
        warn("no models installed: only face presence is reported ('meshfer models' lists them)")
    csv_writer = TimelineCsvWriter(args.csv, labels, analyzer.tasks) if args.csv else None
    video_writer = None
    drawing = window is not None or args.output
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=source.frame_count, unit="frame", desc=f"Analysing {source.name}", dynamic_ncols=True)

    interrupted = False
    signum: int | None = None  # the signal that stopped the run (its exit status: 128 + it, as predict's)
    failed: dict[str, str] = {}  # output -> why it could not be (fully) written
    n = 0
    frames_out, t_space = 0, 0.0  # frames written to --output; when its free space was last looked at
    fps_ema = None
    t_start = time.perf_counter()
    try:
        with _Stop() as stop:
            t_prev = t_start
            while not stop.requested:
                item = source.read()
                if item is None:
                    break
                frame, timestamp = item
                result = analyzer.process(frame, timestamp)
                n += 1
                if csv_writer is not None:
                    try:
                        csv_writer.write(result.record)
                    except OSError as exc:
                        failed["csv"] = f"{args.csv}: cannot write the CSV file ({exc.strerror or exc}) after {n - 1} frames"
                        _close_quietly(csv_writer)
                        csv_writer = None
                if drawing:
                    from ..overlay import draw_overlay

                    now = time.perf_counter()
                    fps_now = 1.0 / max(now - t_prev, 1e-6)
                    fps_ema = fps_now if fps_ema is None else 0.9 * fps_ema + 0.1 * fps_now
                    t_prev = now
                    draw_overlay(frame, result, labels, fps_ema, args.overlay)
                    if args.output and "output" not in failed:
                        if video_writer is None:
                            video_writer = open_video_writer(args.output, source.fps, (frame.shape[1], frame.shape[0]))
                        # OpenCV's writer does not report a full disk: look at the free space now and then
                        if now - t_space >= 1.0:
                            t_space = now
                            free = free_bytes(args.output)
                            if free is not None and free < _MIN_FREE:
                                failed["output"] = (f"{args.output}: No space left on device (under 1 MB free after "
                                                    f"{frames_out} frames); the annotated video was not kept")
                                video_writer.release()
                                video_writer = None
                        if video_writer is not None:
                            video_writer.write(frame)
                            frames_out += 1
                    if window is not None and not window.show(frame):
                        break
                if bar is not None:
                    bar.update(1)
                if args.max_frames is not None and n >= args.max_frames:
                    break
            interrupted = stop.requested
            signum = stop.signum
    finally:
        elapsed = time.perf_counter() - t_start
        if bar is not None:
            bar.close()
        source.close()
        analyzer.close()
        if csv_writer is not None:
            try:
                csv_writer.close()
            except OSError as exc:
                failed["csv"] = f"{args.csv}: cannot write the CSV file ({exc.strerror or exc})"
                _close_quietly(csv_writer)
        if video_writer is not None:
            video_writer.release()
            problem = video_file_problem(args.output, frames_out) if "output" not in failed else None
            if problem is not None:
                free = free_bytes(args.output)
                why = "No space left on device: " if free is not None and free < _MIN_FREE else ""
                failed["output"] = f"{args.output}: {why}{problem}; the annotated video was not kept"
        if "output" in failed:
            try:  # an incomplete video is of no use; the file was made by this run (never an existing one)
                os.unlink(args.output)
            except OSError:
                pass
        if window is not None:
            window.close()

    if interrupted:
        warn(f"stopped after {n} frames; writing what was gathered")
    summary = analyzer.summary(n / elapsed if n and elapsed > 0 else None, interrupted)
    if args.plot:
        from ..overlay import plot_timeline

        from pathlib import Path

        from .._io import atomic_write

        try:  # written whole or not at all; the summary below is printed either way
            figure = plot_timeline(analyzer.timeline, summary, None, labels)
            with atomic_write(args.plot) as f:
                figure.savefig(f, dpi=100, format=Path(args.plot).suffix.lstrip(".").lower())
        except (OSError, ValueError, RuntimeError) as exc:
            failed["plot"] = f"{args.plot}: cannot write the plot ({getattr(exc, 'strerror', None) or exc})"
    if args.json:
        out = {"source": source.name, **summary.to_dict()}
        for key, value in (("csv", args.csv), ("plot", args.plot), ("output", args.output)):
            if value and key not in failed:
                out[key] = value
        print_json(out)
    else:
        print(f"{source.name}")
        print(summary.format())
        for key, what, value in (("csv", "timeline CSV", args.csv), ("plot", "timeline plot", args.plot),
                                 ("output", "annotated video", args.output)):
            if value and key not in failed:
                print(f"{what + ':':<17}{value}")
    for message in failed.values():
        warn(f"error: {message}")
    if signum is not None:  # stopped by Ctrl-C (130) or SIGTERM (143), after saying what was gathered
        return 128 + signum
    if n == 0:
        warn(f"{source.name}: no frames could be read")
        return 1
    return 2 if failed else 0


#: Below this many free bytes on the --output file system the annotated video stops being written.
_MIN_FREE = 1 << 20


def _close_quietly(writer: Any) -> None:
    try:
        writer.close()
    except OSError:
        try:
            writer._file.close()  # the CSV file itself, whatever its buffer holds
        except Exception:
            pass


_PLOT_FORMATS = ("png", "svg", "svgz", "pdf", "ps", "eps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf", "raw", "rgba")


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output path is writable (and not the video being read), and the plot's format is one
    matplotlib writes, before the analysis starts."""
    from pathlib import Path

    from .._io import check_writable
    from ..errors import MeshferError, OutputError

    source = Path(args.source)
    if not args.source.isdigit() and (source.exists() or source.is_symlink()) and not source.is_dir():
        from ..images import file_problem

        problem = file_problem(source)
        if problem is not None:  # a FIFO or device would block the video reader
            raise MeshferError(f"{args.source}: cannot read this video ({problem})")
    for option, value in (("--csv", args.csv), ("--plot", args.plot), ("--output", args.output)):
        if not value:
            continue
        path = Path(value)
        try:
            if source.is_file() and path.exists() and path.resolve() == source.resolve():
                raise OutputError(f"{value}: {option} names the video being read; choose another file")
        except OSError:
            pass
        if option == "--plot":
            suffix = path.suffix.lower().lstrip(".")
            if suffix not in _PLOT_FORMATS:
                raise OutputError(
                    f"{value}: --plot needs a file name ending in a format matplotlib writes "
                    f"(.{', .'.join(_PLOT_FORMATS[:6])}, ...)"
                )
        check_writable(path, what=f"{option} file")
