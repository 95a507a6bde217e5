"""Face meshes for many images: worker processes, a progress bar, and a cache.

:func:`extract` turns a data root (``face_<label>`` folders), a :class:`~meshfer.datasets.Dataset`
or a list of image paths into a :class:`~meshfer.meshtable.MeshTable`. With an output file the
work is cached: the file itself holds the results, and a re-run processes only images that are new
or changed (by path, size and modification time).

Nothing already extracted is lost: results are checkpointed into ``<output>.parts/`` every
``checkpoint_every`` images or ``checkpoint_seconds`` seconds, whichever comes first, so that an
interruption (Ctrl-C, SIGTERM, a crash, even SIGKILL) loses at most the last few seconds; a re-run
merges the parts. The output's folder is checked before any work (writable, enough free space),
and a write error during the run (a full disk) ends it with one line saying what was kept. A
worker process that dies (killed by the system for memory, say) costs only the image it was on:
the images it held are run again one by one, and the one that kills a worker is reported as
unreadable.

The work runs in local worker processes (``engine="local"``, the default) or on a Ray cluster
(``engine="ray"`` or a :class:`meshfer.ray_engine.RayEngine`; see that module): the cache,
checkpoints, order and results are the same.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ._io import check_writable, os_reason, output_lock
from .crops import DEFAULT_CROP, CropSpec
from .datasets import EXPRESSION_PREFIX, Dataset, ImageRecord, scan_dataset, scan_paths
from .errors import ImageReadError, LandmarkerModelError, MeshferError, OutputError, Terminated
from .landmarks import FaceLandmarker, LandmarkerOptions
from .meshtable import STATUS_NO_FACE, STATUS_OK, STATUS_UNREADABLE, MeshTable

__all__ = ["extract", "extract_folder", "cache_file", "ExtractStats", "default_workers", "process_image", "OTHER_ROWS"]

_CHUNK = 16
#: What :func:`extract` does with rows of the output file for images that are not in the source
#: but still exist: ``keep`` them (the file is a cache of several sources), ``refuse`` to run
#: (``meshfer extract -o``: the file holds more than this data), ``refuse-foreign``: keep those of
#: images under the source's root (another split of the same data) but refuse if there are others
#: (``meshfer evaluate --meshes``: the file belongs to another data set), or ``drop`` them (replace).
OTHER_ROWS = ("keep", "refuse", "refuse-foreign", "drop")
#: Reason recorded for an image during which a worker process died.
WORKER_DIED = "the worker process died while reading this image (out of memory?)"


@dataclass
class ExtractStats:
    """What one :func:`extract` call did (seconds are wall-clock for the whole run, and summed
    over workers for the per-stage figures)."""

    n_total: int = 0
    n_cached: int = 0
    n_processed: int = 0
    wall_s: float = 0.0
    worker_s: float = 0.0
    read_s: float = 0.0
    inference_s: float = 0.0
    interrupted: bool = False
    n_checkpoints: int = 0
    n_workers_lost: int = 0
    engine: str = "local"
    #: Ray engine only: seconds to start (or join) Ray, and until the first actor began its first
    #: batch (actors started too); batches run; seconds actors sat idle between two of their batches
    #: (Ray's scheduling and transfers, summed over actors).
    engine_start_s: float = 0.0
    engine_ready_s: float = 0.0
    n_batches: int = 0
    actor_gap_s: float = 0.0
    #: Ray engine only: the cluster nodes whose actors sent back rows (Ray node ids).
    engine_nodes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------
# Per-image work (runs in worker processes)


def process_image(landmarker: FaceLandmarker, path: str | Path) -> dict[str, Any]:
    """One image -> one MeshTable row dict (never raises for a bad image; a broken landmarker
    model raises LandmarkerModelError). Decoder warnings are in ``row["messages"]``."""
    from .images import file_problem, load_image

    path = Path(path)
    row: dict[str, Any] = {"path": str(path)}
    problem = file_problem(path)
    if problem is not None:  # never opened; cached by its stat when it has one (a FIFO, a device)
        row.update(status=STATUS_UNREADABLE, error=problem)
        with contextlib.suppress(OSError):
            st = path.stat()
            row["file_size"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
        return row
    try:
        st = path.stat()
        row["file_size"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
    except OSError as exc:
        row.update(status=STATUS_UNREADABLE, error=f"cannot read file ({exc.strerror or exc})")
        return row
    messages: list[str] = []
    t0 = time.perf_counter()
    try:
        image, size = load_image(path, max_side=landmarker.options.max_side, messages=messages)
    except ImageReadError as exc:
        row.update(status=STATUS_UNREADABLE, error=exc.reason, read_s=time.perf_counter() - t0)
        if messages:
            row["messages"] = messages
        return row
    t1 = time.perf_counter()
    before = landmarker.inference_seconds
    row["read_s"] = t1 - t0
    row["image_size"] = size
    if messages:
        row["messages"] = messages
    try:
        faces = landmarker.detect(image, image_size=size)
    except LandmarkerModelError:
        raise
    except ImageReadError as exc:
        row.update(status=STATUS_UNREADABLE, error=exc.reason)
        return row
    except MemoryError:
        row.update(status=STATUS_UNREADABLE, error="not enough memory to look for the face")
        return row
    except Exception as exc:  # one image's failure, not the run's
        row.update(status=STATUS_UNREADABLE, error=f"face detection failed ({type(exc).__name__}: {exc})")
        return row
    finally:
        row["inference_s"] = landmarker.inference_seconds - before
    if faces:
        row.update(status=STATUS_OK, mesh=faces[0])
    else:
        row.update(status=STATUS_NO_FACE, error="no face found")
    return row


_WORKER_LANDMARKER: FaceLandmarker | None = None


def _worker_init(options: LandmarkerOptions) -> None:
    global _WORKER_LANDMARKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and saves
    _WORKER_LANDMARKER = FaceLandmarker(options)


def _worker_chunk(paths: Sequence[str]) -> tuple[list[dict[str, Any]], float]:
    assert _WORKER_LANDMARKER is not None
    t = time.perf_counter()
    rows = [process_image(_WORKER_LANDMARKER, p) for p in paths]
    return rows, time.perf_counter() - t


# ------------------------------------------------------------------------------------------------
# Cache


def _cache_key(row_path: str, size: int, mtime: int) -> tuple[str, int, int]:
    return (row_path, int(size), int(mtime))


def _parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _load_cache(
    output: Path | None, meta: dict[str, Any], option: str | None = None
) -> tuple[list[MeshTable], MeshTable | None]:
    """Earlier results in the output file and in leftover checkpoint parts, when they were made
    with the same landmarker model, attempts and crops (otherwise everything is extracted
    again); and the output file's own table (None when there is none)."""
    if output is None:
        return [], None
    tables: list[MeshTable] = []
    existing = None
    if output.exists():
        if not output.is_file():
            raise OutputError(f"{output}: exists and is not a regular file; choose another output file")
        if not MeshTable.is_meshtable_file(output):
            raise MeshferError(
                f"{output}: exists and is not a meshfer mesh file; refusing to overwrite it "
                f"(choose another {f'{option} file' if option else 'output file'})"
            )
        existing = MeshTable.load(output)
        tables.append(existing)
    parts = _parts_dir(output)
    if parts.is_dir():
        for part in sorted(parts.glob("part-*.npz")):
            try:
                tables.append(MeshTable.load(part))
            except MeshferError:
                continue  # a part cut short by a crash: its images are simply done again
    same = ("landmarker_sha256", "attempts", "crop")
    return [t for t in tables if all(t.meta.get(k) == meta[k] for k in same)], existing


def _index_cache(tables: list[MeshTable]) -> tuple[MeshTable | None, dict[tuple[str, int, int], int]]:
    if not tables:
        return None, {}
    merged = MeshTable.concat(tables)
    index: dict[tuple[str, int, int], int] = {}
    for i, (p, s, m, st) in enumerate(zip(merged.paths, merged.file_sizes, merged.mtimes_ns, merged.status)):
        if s >= 0:
            index[_cache_key(str(p), s, m)] = i  # later rows (newer parts) win
    return merged, index


def _stat_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return _cache_key(str(path), st.st_size, st.st_mtime_ns)


def _other_rows(cached: MeshTable | None, records: list[ImageRecord]) -> np.ndarray:
    """Rows of the cache (last one per path) for images that are not in ``records`` and whose
    files still exist."""
    if cached is None or not len(cached):
        return np.zeros(0, np.int64)
    wanted = {str(r.path) for r in records}
    last: dict[str, int] = {}
    for i, p in enumerate(map(str, cached.paths)):
        if p not in wanted:
            last[p] = i
    return np.array(sorted(i for p, i in last.items() if os.path.exists(p)), dtype=np.int64)


def _is_under(path: str, root: Path) -> bool:
    try:
        Path(path).relative_to(Path(root).absolute())
        return True
    except ValueError:
        return False


def _row_bytes(n_rows: int, crop: CropSpec | None, path_chars: int) -> int:
    """About how many bytes ``n_rows`` rows take in a saved table (an uncompressed .npz)."""
    side = crop.size if crop is not None else 0
    per_row = 478 * 3 * 4 + 52 * 4 + 16 * 4 + 2 * 4 + 3 * 8 + side * side + 4 * (2 * path_chars + 96)
    return n_rows * per_row + 64 * 1024


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[dict[str, Any]]:
    """SIGTERM raises :class:`~meshfer.errors.Terminated` (a KeyboardInterrupt) in the main thread
    for the duration, so that it is handled like Ctrl-C. While ``state["saving"]`` is true a
    SIGTERM is only noted (``state["pending"]``), so that the final save completes."""
    state: dict[str, Any] = {"saving": False, "pending": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        if state["saving"]:
            state["pending"] = signum
            return
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover - not the main thread of the main interpreter
        yield state
        return
    try:
        yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


class _WriteFailed(Exception):
    """A checkpoint could not be written: the run stops and keeps what was saved."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        super().__init__(str(error))


def _print_message(message: str) -> None:
    try:
        from tqdm.auto import tqdm

        tqdm.write(f"meshfer: warning: {message}", file=sys.stderr)
    except (ImportError, OSError, ValueError):  # pragma: no cover
        pass


# ------------------------------------------------------------------------------------------------


def _resolve_source(source: Any, prefix: str) -> Dataset:
    if isinstance(source, Dataset):
        return source
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir() and any(c.is_dir() and c.name.startswith(prefix) for c in p.iterdir()):
            return scan_dataset(p, prefix)
        if p.is_dir() or p.is_file():
            return scan_paths([p])
        return scan_dataset(p, prefix)  # raises the 'no such folder' DatasetError
    return scan_paths(source)


def extract(
    source: str | Path | Dataset | Iterable[str | Path],
    output: str | Path | None = None,
    *,
    workers: int | None = None,
    options: LandmarkerOptions | None = None,
    prefix: str = EXPRESSION_PREFIX,
    progress: bool = True,
    checkpoint_every: int = 512,
    checkpoint_seconds: float = 2.0,
    stats: ExtractStats | None = None,
    crops: bool | CropSpec = True,
    other_rows: str = "keep",
    on_message: Callable[[str], None] | None = _print_message,
    engine: str | Any | None = None,
    output_option: str | None = None,
) -> MeshTable:
    """Face meshes for every image of ``source``, in the source's order.

    ``source`` is a data root of ``<prefix><label>`` folders, a Dataset, a folder of unlabelled
    images, or an iterable of image paths. ``output`` (.npz) is both the result file and the cache.
    ``workers`` defaults to all cores; each worker process holds one landmarker. Pass an
    :class:`ExtractStats` to receive timing figures. Problems found while scanning (non-image files,
    empty folders) are in ``table.meta["skipped"]``. ``crops`` (default: :data:`~meshfer.crops.DEFAULT_CROP`)
    also stores each face's mesh-aligned grey crop, so that pixel models train without MediaPipe;
    False leaves them out.

    The output file may hold rows of images that are not in ``source``: ``other_rows`` (see
    :data:`OTHER_ROWS`) keeps them in the file (default; the returned table holds the source's
    rows only), refuses to run (:class:`~meshfer.errors.OutputError`, before any work), or drops
    them. Rows of files that no longer exist are always dropped. Decoder warnings (naming the file)
    go to ``on_message`` (default: stderr; None: silent).

    On KeyboardInterrupt (and SIGTERM) everything extracted so far is saved (when ``output`` is
    given) and the interrupt is re-raised. A write error raises OutputError saying what was kept.

    ``engine``: ``"local"`` (worker processes on this machine), ``"ray"`` (a local Ray instance) or
    a :class:`~meshfer.ray_engine.RayEngine` (a cluster); None: ``$MESHFER_ENGINE``, else local.
    Nothing is sent to the engine when every image is in the cache.

    ``output_option``: how the caller's user named ``output`` (``"-o"``, ``"--meshes"``), for the
    messages about it. While it runs, ``extract`` holds ``.<output name>.lock`` beside it (see
    :func:`meshfer._io.output_lock`): a second run on the same output file stops at once with an
    :class:`~meshfer.errors.OutputError` saying which process holds it.
    """
    kwargs = dict(
        workers=workers, options=options, prefix=prefix, progress=progress, checkpoint_every=checkpoint_every,
        checkpoint_seconds=checkpoint_seconds, stats=stats, crops=crops, other_rows=other_rows,
        on_message=on_message, engine=engine, output_option=output_option,
    )
    if output is None:
        return _extract(source, None, **kwargs)
    with output_lock(output, what="mesh file"):
        return _extract(source, output, **kwargs)


def _extract(
    source: str | Path | Dataset | Iterable[str | Path],
    output: str | Path | None = None,
    *,
    workers: int | None = None,
    options: LandmarkerOptions | None = None,
    prefix: str = EXPRESSION_PREFIX,
    progress: bool = True,
    checkpoint_every: int = 512,
    checkpoint_seconds: float = 2.0,
    stats: ExtractStats | None = None,
    crops: bool | CropSpec = True,
    other_rows: str = "keep",
    on_message: Callable[[str], None] | None = _print_message,
    engine: str | Any | None = None,
    output_option: str | None = None,
) -> MeshTable:
    """:func:`extract`, with the output's lock held."""
    if other_rows not in OTHER_ROWS:
        raise ValueError(f"other_rows must be one of {OTHER_ROWS}, got {other_rows!r}")
    t_start = time.perf_counter()
    stats = stats if stats is not None else ExtractStats()
    runner = _engine(engine)
    stats.engine = getattr(runner, "name", "local")
    options = options or LandmarkerOptions()
    dataset = _resolve_source(source, prefix)
    out_path = Path(output).expanduser() if output is not None else None
    records = [ImageRecord(r.path.absolute(), r.label, r.group) for r in dataset.records]

    from . import __version__
    from .assets import resolve_landmarker, sha256_of

    model_path = resolve_landmarker(options.model_path, download=options.download)
    crop_spec = (DEFAULT_CROP if crops is True else crops) or None
    options = LandmarkerOptions(**{**options.__dict__, "model_path": model_path, "crop": crop_spec})
    meta = {
        "labels": list(dataset.labels),
        "root": str(dataset.root) if dataset.root is not None else None,
        "prefix": prefix,
        "landmarker_sha256": sha256_of(model_path),
        "attempts": [a.name for a in options.attempts],
        "crop": crop_spec.to_dict() if crop_spec is not None else None,
        "skipped": [{"file": p.path, "reason": p.reason} for p in dataset.problems],
        "meshfer_version": __version__,
    }

    tables, existing = _load_cache(out_path, meta, output_option)
    cached, index = _index_cache(tables)
    others = _other_rows(cached, records) if other_rows != "drop" else np.zeros(0, np.int64)
    refused = others
    if other_rows == "refuse-foreign" and len(others):
        assert cached is not None
        inside = [dataset.root is not None and _is_under(str(cached.paths[i]), dataset.root) for i in others]
        refused = others[~np.asarray(inside, dtype=bool)]
    if len(refused) and other_rows in ("refuse", "refuse-foreign"):
        assert cached is not None and out_path is not None
        others = refused
        example = str(cached.paths[others[0]])
        made_from = cached.meta.get("root") if existing is None else existing.meta.get("root")
        raise OutputError(
            f"{out_path}: holds the meshes of {len(others)} other images, not in this data"
            f"{f' (it was made from {made_from})' if made_from else ''}, e.g. {example}; refusing to drop them "
            f"(choose another {f'{output_option} file' if output_option else 'output file'}, or pass --overwrite "
            "to replace it)"
        )
    todo: list[int] = []
    source_rows: list[tuple[str, int]] = []  # ('cache', row in cached) or ('new', record index)
    for i, rec in enumerate(records):
        key = _stat_key(rec.path)
        if key is not None and key in index:
            source_rows.append(("cache", index[key]))
        else:
            source_rows.append(("new", i))
            todo.append(i)
    stats.n_total, stats.n_cached = len(records), len(records) - len(todo)

    parts = _parts_dir(out_path) if out_path is not None else None
    if out_path is not None and todo:
        chars = max([len(str(r.path)) for r in records] or [64])
        check_writable(out_path, need_bytes=_row_bytes(len(todo) + len(records) + len(others), crop_spec, chars))

    new_rows: dict[int, dict[str, Any]] = {}
    pending_part: list[dict[str, Any]] = []
    part_no = [0]
    last_checkpoint = [time.monotonic()]

    def checkpoint(force: bool = False) -> None:
        if parts is None or not pending_part:
            return
        due = len(pending_part) >= checkpoint_every or time.monotonic() - last_checkpoint[0] >= checkpoint_seconds
        if not (due or force):
            return
        try:
            parts.mkdir(parents=True, exist_ok=True)
            while (parts / f"part-{part_no[0]:05d}.npz").exists():
                part_no[0] += 1
            MeshTable.from_rows(pending_part, meta=meta).save(parts / f"part-{part_no[0]:05d}.npz")
        except OSError as exc:
            _remove_if_empty(parts)
            raise _WriteFailed(exc) from None
        stats.n_checkpoints += 1
        pending_part.clear()
        last_checkpoint[0] = time.monotonic()

    def collect(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            i = row.pop("_index")
            rec = records[i]
            row.update(label=rec.label, group=rec.group)
            stats.read_s += row.pop("read_s", 0.0)
            stats.inference_s += row.pop("inference_s", 0.0)
            for message in row.pop("messages", ()):
                if on_message is not None:
                    on_message(message)
            new_rows[i] = row
            pending_part.append(row)
        checkpoint()

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="Extracting meshes", dynamic_ncols=True)
    n_workers = max(1, min(workers or default_workers(), max(1, len(todo))))
    write_error: OSError | None = None
    with _sigterm_as_interrupt() as sigterm:
        try:
            if todo and runner is not None:
                runner.run(records, todo, options, workers, collect, bar, stats)
            elif todo and n_workers == 1:
                with FaceLandmarker(options) as landmarker:
                    for i in todo:
                        t = time.perf_counter()
                        row = process_image(landmarker, records[i].path)
                        stats.worker_s += time.perf_counter() - t
                        row["_index"] = i
                        collect([row])
                        if bar is not None:
                            bar.update(1)
            elif todo:
                FaceLandmarker(options).close()  # a model MediaPipe refuses: one line here, not in each worker
                _run_pool(records, todo, n_workers, options, collect, bar, stats)
        except _WriteFailed as exc:
            write_error = exc.error
        except KeyboardInterrupt:
            stats.interrupted = True
            raise
        finally:
            sigterm["saving"] = True  # a SIGTERM from here on waits until what was done is saved
            if bar is not None:
                bar.close()
            done_idx = [i for i, (kind, j) in enumerate(source_rows) if kind == "cache" or j in new_rows]
            table = _assemble([source_rows[i] for i in done_idx], cached, new_rows, meta)
            if len(table):  # labels and groups of the current source, also for rows from the cache
                table = replace(
                    table,
                    labels=np.array([records[i].label for i in done_idx], dtype=str),
                    groups=np.array([records[i].group for i in done_idx], dtype=str),
                )
            table.meta["complete"] = not stats.interrupted and write_error is None and len(table) == len(records)
            stats.n_processed = len(new_rows)
            stats.wall_s = time.perf_counter() - t_start
            table.meta["timing"] = stats.as_dict()
            if out_path is not None:
                assert parts is not None
                saved = table
                if len(others):
                    assert cached is not None
                    saved = MeshTable.concat([table, cached.subset(others)], meta=table.meta)
                unchanged = (
                    not new_rows and existing is not None and not parts.is_dir() and len(saved) == len(existing)
                    and np.array_equal(saved.paths, existing.paths) and np.array_equal(saved.labels, existing.labels)
                    and np.array_equal(saved.groups, existing.groups)
                    and existing.meta.get("complete") == table.meta["complete"]
                )
                final_saved = False
                # a run stopped before any image was done, with no output yet, writes no empty file
                nothing_to_keep = not len(saved) and existing is None and not table.meta["complete"]
                if not unchanged and not nothing_to_keep:  # a pure cache hit leaves the file as it was
                    if write_error is None:
                        try:
                            checkpoint(force=True)
                        except _WriteFailed as exc:
                            write_error = exc.error
                    try:
                        saved.save(out_path)
                        final_saved = True
                        shutil.rmtree(parts, ignore_errors=True)
                    except OSError as exc:
                        write_error = write_error or exc
                _remove_if_empty(parts)
                if write_error is not None:
                    n_existing = len(existing) if existing is not None else 0
                    _raise_write_error(out_path, write_error, parts, len(table), len(records),
                                       len(table) if final_saved else None, n_existing)
            if sigterm["pending"] is not None and not stats.interrupted:
                stats.interrupted = True
                raise Terminated(sigterm["pending"])
    return table


def _engine(engine: str | Any | None) -> Any:
    """None for the local engine, else an object with ``name`` and ``run`` (a RayEngine)."""
    if engine is None:
        from .ray_engine import engine_from_env

        return engine_from_env()
    if isinstance(engine, str):
        if engine == "local":
            return None
        if engine == "ray":
            from .ray_engine import RayEngine

            return RayEngine()
        raise ValueError(f"engine must be 'local', 'ray' or a RayEngine, got {engine!r}")
    if not callable(getattr(engine, "run", None)):
        raise ValueError(f"engine must be 'local', 'ray' or a RayEngine, got {engine!r}")
    return engine


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only succeeds when empty
    except OSError:
        pass


def _raise_write_error(
    out_path: Path, error: OSError, parts: Path, n_done: int, n_total: int, n_saved: int | None, n_existing: int
) -> None:
    """One line: what could not be written, how far the run got, and what is kept where."""
    if n_saved is not None:
        kept = f"the {n_saved} images done are saved in {out_path}"
    else:
        in_parts = 0
        if parts.is_dir():
            for part in parts.glob("part-*.npz"):
                with contextlib.suppress(MeshferError):
                    in_parts += len(MeshTable.load(part))
        places = [f"{n_existing} in {out_path}"] if n_existing else []
        places += [f"{in_parts} in {parts}"] if in_parts else []
        kept = f"saved so far: {' and '.join(places)}" if places else "nothing new could be saved"
    stopped = f"after {n_done} of {n_total} images" if n_done < n_total else f"with all {n_total} images done"
    fix = "make it writable" if getattr(error, "errno", None) == errno.EROFS else "free some space"
    raise OutputError(
        f"{out_path}: cannot write the output ({os_reason(error)}) {stopped}; {kept}; "
        f"{fix} (or choose another output file) and run the same command again to go on"
    ) from None


def _assemble(
    rows_done: list[tuple[str, int]], cached: MeshTable | None, new_rows: dict[int, dict[str, Any]], meta: dict[str, Any]
) -> MeshTable:
    """Rows in source order, taken from the cache table or the freshly extracted rows."""
    pieces: list[MeshTable] = []
    for kind, run in itertools.groupby(rows_done, key=lambda item: item[0]):
        idx = [j for _, j in run]
        if kind == "cache":
            assert cached is not None
            pieces.append(cached.subset(np.array(idx, dtype=np.int64)))
        else:
            pieces.append(MeshTable.from_rows([new_rows[j] for j in idx], meta=meta))
    return MeshTable.concat(pieces, meta=meta) if pieces else MeshTable.empty(meta)


def _lost_row(path: Path) -> dict[str, Any]:
    """The row of an image during which a worker process died (cached like any unreadable image,
    so that a re-run does not die on it again)."""
    row: dict[str, Any] = {"path": str(path), "status": STATUS_UNREADABLE, "error": WORKER_DIED}
    with contextlib.suppress(OSError):
        st = path.stat()
        row["file_size"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
    return row


def _new_pool(n: int, options: LandmarkerOptions) -> ProcessPoolExecutor:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(n, mp_context=ctx, initializer=_worker_init, initargs=(options,))


def _stop_pool(pool: ProcessPoolExecutor, in_flight: Iterable[Future] = ()) -> None:
    for fut in in_flight:
        fut.cancel()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_pool(
    records: list[ImageRecord],
    todo: list[int],
    n_workers: int,
    options: LandmarkerOptions,
    collect: Any,
    bar: Any,
    stats: ExtractStats,
) -> None:
    """Process ``todo`` in chunks over ``n_workers`` processes. When a worker dies, the images of
    every chunk then in flight are run again one at a time in a fresh single-worker pool; the
    one during which a worker dies again gets a :data:`WORKER_DIED` row."""
    pending = deque(todo[k : k + _CHUNK] for k in range(0, len(todo), _CHUNK))
    suspects: list[int] = []
    deaths_in_a_row = 0
    while pending or suspects:
        if suspects:
            pool = None
            try:
                for i in suspects:
                    pool = pool or _new_pool(1, options)
                    fut = pool.submit(_worker_chunk, [str(records[i].path)])
                    try:
                        rows, seconds = fut.result()
                        deaths_in_a_row = 0
                    except BrokenProcessPool:
                        stats.n_workers_lost += 1
                        deaths_in_a_row += 1
                        if deaths_in_a_row >= 3:
                            raise MeshferError(
                                "worker processes keep dying (out of memory? see the system log); "
                                "what was extracted is saved"
                            ) from None
                        _stop_pool(pool)
                        pool = None
                        rows, seconds = [_lost_row(records[i].path)], 0.0
                    stats.worker_s += seconds
                    rows[0]["_index"] = i
                    collect(rows)
                    if bar is not None:
                        bar.update(1)
            finally:
                if pool is not None:
                    _stop_pool(pool)
            suspects = []
            continue
        pool = _new_pool(n_workers, options)
        in_flight: dict[Future, list[int]] = {}
        try:
            while (pending or in_flight) and not suspects:
                while pending and len(in_flight) < 3 * n_workers:
                    chunk = pending.popleft()
                    in_flight[pool.submit(_worker_chunk, [str(records[i].path) for i in chunk])] = chunk
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for fut in done:
                    chunk = in_flight.pop(fut)
                    try:
                        rows, seconds = fut.result()
                    except BrokenProcessPool:
                        suspects.extend(chunk)
                        continue
                    stats.worker_s += seconds
                    for i, row in zip(chunk, rows):
                        row["_index"] = i
                    collect(rows)
                    if bar is not None:
                        bar.update(len(rows))
                if suspects:  # a worker died: every chunk still in flight is suspect
                    stats.n_workers_lost += 1
                    for fut, chunk in in_flight.items():
                        suspects.extend(chunk)
                    in_flight.clear()
        except BaseException:
            _stop_pool(pool, in_flight)
            raise
        if suspects:
            _stop_pool(pool)
        else:
            pool.shutdown(wait=True)


def cache_file(directory: str | Path, cache_dir: str | Path, per_class: int | None = None) -> Path:
    """The mesh cache file of a data folder inside ``cache_dir``: ``<name>-<hash of the absolute
    path>[-n<per_class>].npz``, so different folders (and samples) never share a file."""
    import hashlib

    directory = Path(directory).expanduser().absolute()
    tag = hashlib.sha1(str(directory).encode()).hexdigest()[:8]
    suffix = f"-n{per_class}" if per_class else ""
    return Path(cache_dir) / f"{directory.name}-{tag}{suffix}.npz"


def extract_folder(
    directory: str | Path,
    cache_dir: str | Path | None = None,
    *,
    per_class: int | None = None,
    prefix: str = EXPRESSION_PREFIX,
    seed: int = 0,
    workers: int | None = None,
    options: LandmarkerOptions | None = None,
    progress: bool = True,
    engine: str | Any | None = None,
    output_option: str | None = None,
) -> MeshTable:
    """Face meshes of a labelled data folder, at most ``per_class`` images per label (a
    reproducible random sample), cached in ``cache_dir`` (see :func:`cache_file`) when given.
    The one-liner for notebooks and training recipes. ``engine`` as for :func:`extract`
    (None: ``$MESHFER_ENGINE``, else local)."""
    dataset = scan_dataset(directory, prefix).limit(per_class, seed=seed)
    output = cache_file(directory, cache_dir, per_class) if cache_dir is not None else None
    return extract(dataset, output, workers=workers, options=options, prefix=prefix, progress=progress, engine=engine)
