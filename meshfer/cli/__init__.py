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
COMMANDS = ["extract", "predict", "evaluate", "models", "train", "video", "sort", "web"]


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
    """Entry point of the ``meshfer`` console script; returns the exit status.

    Every error meshfer foresees ends in one line on stderr (exit status 2); Ctrl-C and SIGTERM
    stop a command the same way, after it has saved what it did (130, 143); a standard output
    that cannot be written (a full disk, ``>/dev/full``) is one line too."""
    from ..errors import MeshferError, Terminated
    from ._common import StdoutError, guarded_stdout, sigterm_as_interrupt

    parser = build_parser()
    args = parser.parse_args(argv)
    with guarded_stdout() as stdout, sigterm_as_interrupt():
        try:
            status = int(args.run(args) or 0)
            stdout.flush()
            return status
        except StdoutError as exc:
            stdout.silence()
            _error_line(f"meshfer: error: {exc}")
            return 2
        except MeshferError as exc:
            _error_line(f"meshfer: error: {exc}")
            return 2
        except Terminated as exc:
            _error_line("meshfer: terminated")
            return 128 + exc.signum
        except KeyboardInterrupt:
            _error_line("meshfer: interrupted")
            return 130
        except BrokenPipeError:  # e.g. `meshfer predict ... | head`
            stdout.silence()
            return 0
        except MemoryError:
            _error_line("meshfer: error: out of memory")
            return 2
        except OSError as exc:  # a file error no command foresaw: still one line, with the file
            _error_line(f"meshfer: error: {exc}")
            return 2


def _error_line(text: str) -> None:
    try:
        print(text, file=sys.stderr)
    except (OSError, ValueError):  # stderr itself is gone
        pass
