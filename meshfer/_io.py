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
# One run at a time per output file

_LOCK_MAGIC = b"meshfer lock\n"
_held_locks: dict[tuple[str, int], int] = {}  # (lock file, thread) -> depth, for nested use in one run
_held_guard = threading.Lock()


def lock_path(path: str | Path) -> Path:
    """The lock file of an output file: ``.<name>.lock`` beside it (hidden, as the temporary files
    of :func:`atomic_write` are, so that no folder scan lists it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _lock_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 512).decode("utf-8", "replace")
    except OSError:
        return "another meshfer run"
    pid = next((line[4:].strip() for line in text.splitlines() if line.startswith("pid ")), "")
    return f"another meshfer run (process {pid})" if pid.isdigit() else "another meshfer run"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


@contextlib.contextmanager
def output_lock(path: str | Path, *, what: str = "output file") -> Iterator[Path | None]:
    """Hold :func:`lock_path` (``.<name>.lock``) for the duration, so that two runs never write
    the same output file at once: a second run raises :class:`~meshfer.errors.OutputError` at
    once, saying which process holds it. The lock is the kernel's (``flock``) on that file: it goes with the process however
    that ends (an exception, Ctrl-C, SIGKILL), so a lock file left by a dead process blocks
    nothing; the file itself is removed on the way out. Where no lock file can be made (a read-only
    folder: nothing will be written there either) the run goes on without one; a file of that name
    that is not a meshfer lock is never overwritten. Nested use in one thread is allowed."""
    import fcntl

    output = Path(path).expanduser()
    lock = lock_path(output)
    key = (os.path.abspath(lock), threading.get_ident())
    with _held_guard:
        if key in _held_locks:
            _held_locks[key] += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield lock
        finally:
            with _held_guard:
                _held_locks[key] -= 1
                if not _held_locks[key]:
                    del _held_locks[key]
        return
    created = _make_folders(lock.parent)  # the output's folder, as the run would make it anyway
    try:
        fd = _acquire(lock, output, what, fcntl)
    except BaseException:
        _remove_empty(created)
        raise
    if fd is None:
        try:
            yield None
        finally:
            _remove_empty(created)
        return
    with _held_guard:
        _held_locks[key] = 1
    try:
        yield lock
    finally:
        with _held_guard:
            _held_locks.pop(key, None)
        try:  # removed while still locked, and only if it is still this lock's file
            st, fst = os.stat(lock), os.fstat(fd)
            if (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
                os.unlink(lock)
        except OSError:
            pass
        os.close(fd)
        _remove_empty(created)  # a run that wrote nothing leaves no new empty folder behind


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    missing = []
    p = folder
    try:
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return [m for m in missing if m.is_dir()]
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote its output there), or gone
            return


def _acquire(lock: Path, output: Path, what: str, fcntl: object) -> int | None:
    """Open and lock ``lock``; the file descriptor (None: no lock can be taken here)."""
    for _ in range(20):  # the file may be removed by its holder between our open and our lock
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError:  # read-only folder, a name over the limit, a link, ...: no lock here
            return None
        try:
            head = os.pread(fd, len(_LOCK_MAGIC), 0)
            if head and not head.startswith(_LOCK_MAGIC[: len(head)]):
                os.close(fd)
                raise OutputError(f"{lock}: exists and is not a meshfer lock file; move it away to write the {what} "
                                  f"{output.name}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[attr-defined]
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise OutputError(
                    f"{output}: {holder} is writing this {what} (it holds {lock.name}); "
                    "wait for it to end, or choose another file"
                ) from None
            except OSError:  # no flock on this file system: the process id written in the file decides
                _check_pid(fd, lock, output, what)
            try:
                st, fst = os.stat(lock), os.fstat(fd)
                same = (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it between our open and our lock: again, on the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, _LOCK_MAGIC + f"pid {os.getpid()}\n".encode(), 0)
            return fd
        except OutputError:
            raise
        except OSError:
            os.close(fd)
            return None
    return None


def _check_pid(fd: int, lock: Path, output: Path, what: str) -> None:
    """Without flock: the lock is free when the file names no process, or a process that is gone."""
    text = os.pread(fd, 512, 0).decode("utf-8", "replace")
    pid = next((line[4:].strip() for line in text.splitlines() if line.startswith("pid ")), "")
    if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
        os.close(fd)
        raise OutputError(
            f"{output}: another meshfer run (process {pid}) is writing this {what} "
            f"(it holds {lock.name}); wait for it to end, or choose another file"
        )


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
