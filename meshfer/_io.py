"""File-system helpers: atomic writing, checking that an output can be written, and capturing what
C libraries (libjpeg, libpng, MediaPipe) print on file descriptor 2."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

from .errors import OutputError

#: errno values that mean "the disk is full" (as opposed to a problem with one file).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG})
#: errno values after which writing anything more to the same place is pointless.
FATAL_WRITE_ERRNOS = DISK_FULL_ERRNOS | {errno.EROFS, errno.EIO}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def os_reason(exc: BaseException) -> str:
    """The short reason of an OSError ('No space left on device'), without the file name."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary binary file beside ``path``; on success it replaces ``path`` in one rename
    (readable as a normal new file would be), on any error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        f = os.fdopen(fd, "wb")
        try:
            yield f
            f.flush()
        except BaseException:
            with contextlib.suppress(OSError):  # a failed flush on close after the first error
                f.close()
            raise
        f.close()
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | Path, *, what: str = "output", need_bytes: int = 0) -> Path:
    """Make sure a file can be written at ``path`` before any work is done: its folder exists (it
    is created) and takes a small test file, and about ``need_bytes`` are free there. Raises
    :class:`~meshfer.errors.OutputError` naming the path and the reason; returns the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{path}: the {what} is a folder, not a file")
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: cannot write the {what} ({parent} is not a folder)") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder of the {what} ({os_reason(exc)})") from None
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot write the {what} ({parent} is not a folder)")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what} here ({os_reason(exc)})") from None
    try:
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what} here ({os_reason(exc)})") from None
    finally:
        Path(probe).unlink(missing_ok=True)
    if path.exists() and not os.access(path, os.W_OK) and os.geteuid() != 0:
        raise OutputError(f"{path}: the {what} exists and is not writable")
    if need_bytes > 0:
        try:
            st = os.statvfs(parent)
            free = st.f_bavail * st.f_frsize
        except OSError:
            free = None
        if free is not None and free < need_bytes:
            raise OutputError(
                f"{path}: not enough free space for the {what} ({free / 1e6:.1f} MB free, "
                f"about {need_bytes / 1e6:.1f} MB needed)"
            )
    return path


# ------------------------------------------------------------------------------------------------
# Capturing file descriptor 2

_capture_lock = threading.RLock()
_capture: tuple[int, int] | None = None  # (pid, fd) of this process's capture file


def _capture_fd() -> int | None:
    global _capture
    pid = os.getpid()
    if _capture is not None and _capture[0] == pid:
        return _capture[1]
    try:
        f = tempfile.TemporaryFile()
    except OSError:
        return None
    fd = os.dup(f.fileno())
    f.close()
    _capture = (pid, fd)
    return fd


@contextlib.contextmanager
def captured_stderr(enabled: bool = True) -> Iterator[list[str]]:
    """Send file descriptor 2 to a private file for the duration; yields a list that receives the
    captured text afterwards (nothing when nothing was written). Cheap enough to wrap every image
    decode: one file per process, reused."""
    captured: list[str] = []
    if not enabled:
        yield captured
        return
    with _capture_lock:
        fd = _capture_fd()
        saved = None
        if fd is not None:
            try:
                sys.stderr.flush()
            except (OSError, ValueError, AttributeError):
                pass
            try:
                saved = os.dup(2)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.dup2(fd, 2)
            except OSError:
                if saved is not None:
                    os.close(saved)
                saved = None
        try:
            yield captured
        finally:
            if saved is not None and fd is not None:
                os.dup2(saved, 2)
                os.close(saved)
                size = os.fstat(fd).st_size
                if size:
                    os.lseek(fd, 0, os.SEEK_SET)
                    chunks = []
                    while size > 0:
                        block = os.read(fd, min(size, 1 << 16))
                        if not block:
                            break
                        chunks.append(block)
                        size -= len(block)
                    captured.append(b"".join(chunks).decode("utf-8", "replace"))
