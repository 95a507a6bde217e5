"""The ``meshfer`` command line. Each sub-command lives in its own module of this package with
``add_parser(subparsers, parents)`` and ``run(args) -> int``; modules import their heavy
dependencies inside ``run`` so that ``meshfer --help`` and the prediction path start fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from .._version import __version__

#: Sub-command modules, in the order ``meshfer --help`` lists them.
COMMANDS = ["extract", "predict", "evaluate", "models", "train", "video", "sort"]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--landmarker",
        metavar="PATH",
        help="MediaPipe face_landmarker.task file (default: $MESHFER_LANDMARKER, then the user cache, "
        "then a download from Google's model storage)",
    )
    parser = argparse.ArgumentParser(
        prog="meshfer",
        description="Facial-expression recognition (and eye, gaze and mouth state) from MediaPipe face meshes.",
        epilog="Run 'meshfer COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"meshfer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``meshfer`` console script; returns the exit status."""
    from ..errors import MeshferError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except MeshferError as exc:
        print(f"meshfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("meshfer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `meshfer predict ... | head`
        return 0
