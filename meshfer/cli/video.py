"""meshfer video: expression, eyes, gaze and mouth over time for a camera or a video file."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from ._common import landmarker_options, model_choice, positive_int, print_json, warn


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
        "a central box). Ctrl-C (or q in the --show window) stops and still writes everything gathered.",
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
        help="gaze box counted as attentive (default -0.4,0.4,-0.4,0.4)",
    )
    p.add_argument(
        "--max-blink",
        type=float,
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
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

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
    window = None
    if args.show:
        from ..overlay import Window

        window = Window("meshfer")  # fails with a clear message when there is no display
    config = TemporalConfig(
        smoothing=args.smoothing, attention_box=args.attention_box or AttentionBox(), max_blink_s=args.max_blink
    )

    from ..predict import Predictor
    from ..video import TimelineCsvWriter, VideoAnalyzer, VideoSource, open_video_writer

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
    n = 0
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
                    csv_writer.write(result.record)
                if drawing:
                    from ..overlay import draw_overlay

                    now = time.perf_counter()
                    fps_now = 1.0 / max(now - t_prev, 1e-6)
                    fps_ema = fps_now if fps_ema is None else 0.9 * fps_ema + 0.1 * fps_now
                    t_prev = now
                    draw_overlay(frame, result, labels, fps_ema, args.overlay)
                    if args.output:
                        if video_writer is None:
                            video_writer = open_video_writer(args.output, source.fps, (frame.shape[1], frame.shape[0]))
                        video_writer.write(frame)
                    if window is not None and not window.show(frame):
                        break
                if bar is not None:
                    bar.update(1)
                if args.max_frames is not None and n >= args.max_frames:
                    break
            interrupted = stop.requested
    finally:
        elapsed = time.perf_counter() - t_start
        if bar is not None:
            bar.close()
        source.close()
        analyzer.close()
        if csv_writer is not None:
            csv_writer.close()
        if video_writer is not None:
            video_writer.release()
        if window is not None:
            window.close()

    if interrupted:
        warn(f"stopped after {n} frames; writing what was gathered")
    summary = analyzer.summary(n / elapsed if n and elapsed > 0 else None, interrupted)
    if args.plot:
        from ..overlay import plot_timeline

        plot_timeline(analyzer.timeline, summary, args.plot, labels)
    if args.json:
        out = {"source": source.name, **summary.to_dict()}
        for key, value in (("csv", args.csv), ("plot", args.plot), ("output", args.output)):
            if value:
                out[key] = value
        print_json(out)
    else:
        print(f"{source.name}")
        print(summary.format())
        for what, value in (("timeline CSV", args.csv), ("timeline plot", args.plot), ("annotated video", args.output)):
            if value:
                print(f"{what + ':':<17}{value}")
    if n == 0:
        warn(f"{source.name}: no frames could be read")
        return 1
    return 0
