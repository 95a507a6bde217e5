"""Face meshes for many images: worker processes, a progress bar, and a cache.

:func:`extract` turns a data root (``face_<label>`` folders), a :class:`~meshfer.datasets.Dataset`
or a list of image paths into a :class:`~meshfer.meshtable.MeshTable`. With an output file the
work is cached: the file itself holds the results, and a re-run processes only images that are new
or changed (by path, size and modification time). While it runs, results are checkpointed into
``<output>.parts/`` so that an interruption (Ctrl-C, a crash) loses nothing already extracted.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .datasets import EXPRESSION_PREFIX, Dataset, ImageRecord, scan_dataset, scan_paths
from .errors import ImageReadError, MeshferError
from .landmarks import FaceLandmarker, LandmarkerOptions
from .meshtable import STATUS_NO_FACE, STATUS_OK, STATUS_UNREADABLE, MeshTable

__all__ = ["extract", "extract_folder", "cache_file", "ExtractStats", "default_workers", "process_image"]

_CHUNK = 16


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
    """One image -> one MeshTable row dict (never raises for a bad image)."""
    from .images import read_image

    path = Path(path)
    row: dict[str, Any] = {"path": str(path)}
    try:
        st = path.stat()
        row["file_size"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
    except OSError as exc:
        row.update(status=STATUS_UNREADABLE, error=f"cannot read file ({exc.strerror or exc})")
        return row
    t0 = time.perf_counter()
    try:
        image = read_image(path)
    except ImageReadError as exc:
        row.update(status=STATUS_UNREADABLE, error=exc.reason, read_s=time.perf_counter() - t0)
        return row
    t1 = time.perf_counter()
    before = landmarker.inference_seconds
    faces = landmarker.detect(image)
    row["read_s"] = t1 - t0
    row["inference_s"] = landmarker.inference_seconds - before
    row["image_size"] = (image.shape[1], image.shape[0])
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


def _load_cache(output: Path | None, meta: dict[str, Any]) -> list[MeshTable]:
    """Earlier results in the output file and in leftover checkpoint parts, when they were made
    with the same landmarker model and attempts (otherwise everything is extracted again)."""
    if output is None:
        return []
    tables: list[MeshTable] = []
    if output.exists():
        if not MeshTable.is_meshtable_file(output):
            raise MeshferError(
                f"{output}: exists and is not a meshfer mesh file; refusing to overwrite it (choose another -o)"
            )
        tables.append(MeshTable.load(output))
    parts = _parts_dir(output)
    if parts.is_dir():
        for part in sorted(parts.glob("part-*.npz")):
            try:
                tables.append(MeshTable.load(part))
            except MeshferError:
                continue  # a part cut short by a crash: its images are simply done again
    same = ("landmarker_sha256", "attempts")
    return [t for t in tables if all(t.meta.get(k) == meta[k] for k in same)]


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
    stats: ExtractStats | None = None,
) -> MeshTable:
    """Face meshes for every image of ``source``, in the source's order.

    ``source`` is a data root of ``<prefix><label>`` folders, a Dataset, a folder of unlabelled
    images, or an iterable of image paths. ``output`` (.npz) is both the result file and the cache.
    ``workers`` defaults to all cores; each worker process holds one landmarker. Pass an
    :class:`ExtractStats` to receive timing figures. Problems found while scanning (non-image files,
    empty folders) are in ``table.meta["skipped"]``.

    On KeyboardInterrupt everything extracted so far is saved (when ``output`` is given) and the
    interrupt is re-raised.
    """
    t_start = time.perf_counter()
    stats = stats if stats is not None else ExtractStats()
    options = options or LandmarkerOptions()
    dataset = _resolve_source(source, prefix)
    out_path = Path(output) if output is not None else None
    records = [ImageRecord(r.path.absolute(), r.label, r.group) for r in dataset.records]

    from . import __version__
    from .assets import resolve_landmarker, sha256_of

    model_path = resolve_landmarker(options.model_path, download=options.download)
    options = LandmarkerOptions(**{**options.__dict__, "model_path": model_path})
    meta = {
        "labels": list(dataset.labels),
        "root": str(dataset.root) if dataset.root is not None else None,
        "prefix": prefix,
        "landmarker_sha256": sha256_of(model_path),
        "attempts": [a.name for a in options.attempts],
        "skipped": [{"file": p.path, "reason": p.reason} for p in dataset.problems],
        "meshfer_version": __version__,
    }

    cached, index = _index_cache(_load_cache(out_path, meta))
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

    new_rows: dict[int, dict[str, Any]] = {}
    pending_part: list[dict[str, Any]] = []
    part_no = [0]
    parts = _parts_dir(out_path) if out_path is not None else None

    def checkpoint(force: bool = False) -> None:
        if parts is None or not pending_part or (len(pending_part) < checkpoint_every and not force):
            return
        parts.mkdir(parents=True, exist_ok=True)
        while (parts / f"part-{part_no[0]:05d}.npz").exists():
            part_no[0] += 1
        MeshTable.from_rows(pending_part, meta=meta).save(parts / f"part-{part_no[0]:05d}.npz")
        pending_part.clear()

    def collect(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            i = row.pop("_index")
            rec = records[i]
            row.update(label=rec.label, group=rec.group)
            stats.read_s += row.pop("read_s", 0.0)
            stats.inference_s += row.pop("inference_s", 0.0)
            new_rows[i] = row
            pending_part.append(row)
        checkpoint()

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="Extracting meshes", dynamic_ncols=True)
    n_workers = max(1, min(workers or default_workers(), max(1, len(todo))))
    try:
        if todo and n_workers == 1:
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
            _run_pool(records, todo, n_workers, options, collect, bar, stats)
    except KeyboardInterrupt:
        stats.interrupted = True
        raise
    finally:
        if bar is not None:
            bar.close()
        rows_done = [(kind, j) for kind, j in source_rows if kind == "cache" or j in new_rows]
        table = _assemble(rows_done, cached, new_rows, meta)
        table.meta["complete"] = not stats.interrupted and len(table) == len(records)
        stats.n_processed = len(new_rows)
        stats.wall_s = time.perf_counter() - t_start
        table.meta["timing"] = stats.as_dict()
        unchanged = (
            not new_rows and cached is not None and parts is not None and not parts.is_dir()
            and np.array_equal(table.paths, cached.paths)
        )
        if out_path is not None and not unchanged:  # a pure cache hit leaves the file as it was
            checkpoint(force=True)
            table.save(out_path)
            if parts is not None and parts.is_dir():
                shutil.rmtree(parts, ignore_errors=True)
    return table


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
            pieces.append(MeshTable.from_rows([new_rows[j] for j in idx]))
    return MeshTable.concat(pieces, meta=meta) if pieces else MeshTable.empty(meta)


def _run_pool(
    records: list[ImageRecord],
    todo: list[int],
    n_workers: int,
    options: LandmarkerOptions,
    collect: Any,
    bar: Any,
    stats: ExtractStats,
) -> None:
    import multiprocessing

    chunks = [todo[k : k + _CHUNK] for k in range(0, len(todo), _CHUNK)]
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_worker_init, initargs=(options,))
    in_flight: dict[Future, list[int]] = {}
    next_chunk = 0
    try:
        while next_chunk < len(chunks) or in_flight:
            while next_chunk < len(chunks) and len(in_flight) < 3 * n_workers:
                chunk = chunks[next_chunk]
                in_flight[pool.submit(_worker_chunk, [str(records[i].path) for i in chunk])] = chunk
                next_chunk += 1
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for fut in done:
                chunk = in_flight.pop(fut)
                rows, seconds = fut.result()
                stats.worker_s += seconds
                for i, row in zip(chunk, rows):
                    row["_index"] = i
                collect(rows)
                if bar is not None:
                    bar.update(len(rows))
    except BaseException:
        for fut in in_flight:
            fut.cancel()
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
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
) -> MeshTable:
    """Face meshes of a labelled data folder, at most ``per_class`` images per label (a
    reproducible random sample), cached in ``cache_dir`` (see :func:`cache_file`) when given.
    The one-liner for notebooks and training recipes."""
    dataset = scan_dataset(directory, prefix).limit(per_class, seed=seed)
    output = cache_file(directory, cache_dir, per_class) if cache_dir is not None else None
    return extract(dataset, output, workers=workers, options=options, prefix=prefix, progress=progress)
