"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from typing import Any, Iterator

from ..errors import MeshferError


class StdoutError(MeshferError):
    """Standard output cannot be written (a full disk, ``>/dev/full``)."""


class _GuardedStdout:
    """A proxy of sys.stdout whose write errors (other than a closed pipe) become StdoutError."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _call(self, name: str, *args: Any) -> Any:
        if self._stream is None:  # started with file descriptor 1 closed (`meshfer ... >&-`)
            raise StdoutError("cannot write to standard output (it is closed)")
        try:
            return getattr(self._stream, name)(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutError(f"cannot write to standard output ({exc.strerror or exc})") from None

    def write(self, text: str) -> int:
        return self._call("write", text)

    def writelines(self, lines: Any) -> None:
        self._call("writelines", lines)

    def flush(self) -> None:
        if self._stream is None:  # nothing was written: nothing to send
            return
        self._call("flush")

    def silence(self) -> None:
        """Send what is still buffered, and anything later, to /dev/null (so that the interpreter's
        own flush at exit does not fail again)."""
        if self._stream is None:
            return
        try:
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            if name == "isatty":
                return lambda: False
            if name == "closed":
                return True
            raise StdoutError("cannot write to standard output (it is closed)")
        return getattr(self._stream, name)


def _fill_closed_standard_fds() -> None:
    """Put /dev/null on file descriptors 0, 1 and 2 where the program was started with them closed
    (`meshfer ... >&-`): otherwise the next file opened (an output file, an image) would get the
    number, and whatever a C library prints on stdout or stderr would go into it. Python has set
    sys.stdout (or sys.stderr) to None for such a descriptor, and leaves it so: writing to it is an
    error of its own (:class:`StdoutError`)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:  # pragma: no cover
            return
        if null == fd:
            os.set_inheritable(fd, True)  # as a standard descriptor is: worker processes get it too
            continue
        try:
            os.dup2(null, fd)
        except OSError:  # pragma: no cover
            pass
        os.close(null)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[_GuardedStdout]:
    """sys.stdout wrapped by :class:`_GuardedStdout` for the duration."""
    _fill_closed_standard_fds()
    original = sys.stdout
    errors = getattr(original, "errors", None)
    try:  # a file name that is not valid UTF-8 must not end the run
        original.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        errors = None
    guard = _GuardedStdout(original)
    sys.stdout = guard  # type: ignore[assignment]
    try:
        yield guard
    finally:
        if sys.stdout is guard:
            sys.stdout = original
        if errors is not None:
            try:
                original.reconfigure(errors=errors)  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                pass


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`~meshfer.errors.Terminated` (a KeyboardInterrupt) in the main
    thread for the duration: every command stops on it as on Ctrl-C, saving what it did."""
    from ..errors import Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def landmarker_options(args: argparse.Namespace, **kwargs: Any) -> Any:
    """LandmarkerOptions from the common ``--landmarker`` option."""
    from ..landmarks import LandmarkerOptions

    return LandmarkerOptions(model_path=getattr(args, "landmarker", None), **kwargs)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """``--engine local|ray`` and ``--address ADDR``: where the face meshes are extracted."""
    p.add_argument(
        "--engine", choices=["local", "ray"], default=None,
        help="where the face meshes are extracted: 'local' worker processes, or 'ray' (Ray actors, one landmarker "
        "each: a local Ray instance started for the run, or the cluster given by --address); default: "
        "$MESHFER_ENGINE, else local",
    )
    p.add_argument(
        "--address", metavar="ADDR",
        help="with --engine ray (implied): join this running Ray cluster instead of starting a local instance: "
        "ray://HEAD:10001 (Ray Client), HEAD:6379 (from a node of the cluster) or auto (the cluster started "
        "with 'ray start' on this machine, or $RAY_ADDRESS)",
    )


def engine_from_args(args: argparse.Namespace) -> Any:
    """The ``engine=`` argument of :func:`meshfer.extract.extract` for ``--engine`` / ``--address``
    (None: ``$MESHFER_ENGINE``, else local)."""
    engine, address = getattr(args, "engine", None), getattr(args, "address", None)
    if address and engine == "local":
        raise MeshferError("--address is the address of a Ray cluster: it needs --engine ray, not --engine local")
    if engine == "ray" or address:
        from ..ray_engine import RayEngine

        return RayEngine(address=address or None)
    return engine


def engine_to_env(args: argparse.Namespace) -> None:
    """Pass ``--engine`` / ``--address`` on through ``$MESHFER_ENGINE`` / ``$MESHFER_RAY_ADDRESS``
    (for commands whose extraction happens deep inside, such as ``meshfer train``)."""
    from ..ray_engine import ENV_ADDRESS, ENV_ENGINE

    engine = engine_from_args(args)
    if engine is None:
        return
    os.environ[ENV_ENGINE] = getattr(engine, "name", str(engine))
    address = getattr(engine, "address", None)
    if address:
        os.environ[ENV_ADDRESS] = address
    else:
        os.environ.pop(ENV_ADDRESS, None)


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout (file names that are not valid UTF-8 are written with
    JSON escapes, so that the line stays valid JSON)."""
    text = json.dumps(obj, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"meshfer: {message}", file=sys.stderr)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def model_choice(text: str) -> str | None:
    """A model name, a card path, or 'none' (task off)."""
    return None if text.lower() in ("none", "off") else text
