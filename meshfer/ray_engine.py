"""Mesh extraction on a Ray cluster: ``extract(..., engine="ray")``, ``meshfer extract --engine ray``.

The images still to do are cut into batches of (index, path) rows and run by :class:`MeshActor`,
a class holding one MediaPipe landmarker per actor: by default Ray Core actors (one CPU each,
spread over the nodes) to which the driver hands batches, two queued per actor so that none waits
(``api="actors"``); or, with ``api="data"``, a Ray dataset through ``map_batches`` on a fixed-size
actor pool (Ray Data, slower to start: each actor imports Ray Data and pyarrow). Each actor reads
its images itself, from the path (a shared file system: every node sees the data at the same path),
and returns the same per-image records as the local engine's worker processes
(:func:`meshfer.extract.process_image`), crops included. The driver (this process) turns them back
into rows for :func:`meshfer.extract.extract`, which does everything else exactly as for the local
engine: the cache, the checkpoints, the order, the progress bar, the summary.

What is shipped with the job: the landmarker file, resolved once on the driver and put in Ray's
object store; each actor writes it (checked by its SHA-256) to its node's temporary folder. The
meshfer package itself must be installed on the nodes (the same image as the driver), or given in
``runtime_env`` (``{"py_modules": [...]}``).

Failures: an actor that dies (killed for memory, a lost node, ``ray.kill``) is restarted by Ray
(on another node when its own is gone) and its batches run again (``max_task_retries`` times); a
batch whose actor keeps dying is given up and its images are run again one by one, once; an image
during which an actor dies then too gets the local engine's :data:`~meshfer.extract.WORKER_DIED`
row. Rows are keyed by their index, so an image is never counted twice.

Ray is imported only here, and only when the engine runs: ``import meshfer`` never loads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .errors import LandmarkerModelError, MeshferError

__all__ = ["RayEngine", "MeshActor", "ENV_ENGINE", "ENV_ADDRESS", "engine_from_env"]

#: Environment variable naming the engine :func:`meshfer.extract.extract` uses when none is given:
#: ``local`` (default) or ``ray`` (so that notebooks and training recipes run on Ray unchanged).
ENV_ENGINE = "MESHFER_ENGINE"
#: Environment variable with the Ray address for ``MESHFER_ENGINE=ray`` (unset: a local instance).
ENV_ADDRESS = "MESHFER_RAY_ADDRESS"
#: Images per Ray task by default: Ray's scheduling costs about 40 ms of an actor's time between two
#: tasks on a busy 2-core machine, 1 % of MediaPipe's time for 64 photos (6 % for 16).
BATCH_SIZE = 64
#: The ways of running the actors (see :class:`RayEngine`).
API_CHOICES = ("actors", "data")
#: Set for the Ray processes this engine starts: no usage statistics are sent anywhere, and Ray's
#: C++ log lines go to its log files only (this process prints what happened itself).
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_BACKEND_LOG_LEVEL": "fatal"}


@dataclass(frozen=True)
class RayEngine:
    """Where and how to run the extraction on Ray.

    ``address`` None starts a local Ray instance on this machine for the run (bound to 127.0.0.1,
    no dashboard, a small object store) and stops it after; ``"auto"`` joins the cluster started
    with ``ray start`` on this machine (or ``$RAY_ADDRESS``); ``"ray://HEAD:10001"`` joins a
    remote cluster through Ray Client; ``"HEAD:6379"`` joins from a node of the cluster. When Ray
    is already initialised in this process it is used as it is (and left running). ``actors``:
    landmarkers running at once (default: the ``workers`` given to extract, else every CPU of the
    cluster). ``batch_size``: images per Ray task (default: up to :data:`BATCH_SIZE`, fewer when there are
    too few images to give each actor four batches). ``max_task_retries``: how often a batch whose
    actor died is run again before its images are retried one by one. ``runtime_env`` is passed to
    ``ray.init`` (e.g. ``{"py_modules": [...]}`` on a cluster without meshfer installed). ``api``:
    ``"actors"`` (Ray Core actors fed by the driver, the default) or ``"data"`` (Ray Data's
    ``map_batches`` on an actor pool; its actors take seconds longer to start).
    """

    address: str | None = None
    api: str = "actors"
    actors: int | None = None
    batch_size: int | None = None
    max_task_retries: int = 2
    object_store_memory: int = 256 * 2**20
    temp_dir: str | None = None
    runtime_env: dict[str, Any] | None = None
    #: Testing only: (marker file or None, image file name): an actor processing that image ends
    #: its process (os._exit) - once when a marker file is given (it is created), else every time;
    #: the name ``"<init>"`` makes every actor's constructor raise instead.
    fault: tuple[str | None, str] | None = field(default=None, repr=False)

    name = "ray"

    def run(
        self,
        records: Sequence[Any],
        todo: Sequence[int],
        options: Any,
        workers: int | None,
        collect: Callable[[list[dict[str, Any]]], None],
        bar: Any,
        stats: Any,
    ) -> None:
        """Extract ``records[i]`` for every ``i`` in ``todo``, handing each batch of rows (with
        ``_index``) to ``collect`` as it arrives. Used by :func:`meshfer.extract.extract`."""
        if self.api not in API_CHOICES:
            raise MeshferError(f"RayEngine(api={self.api!r}): choose one of {', '.join(API_CHOICES)}")
        running = sys.modules.get("ray")
        saved_env = {} if running is not None and running.is_initialized() else _push_env(_RAY_ENV)
        try:
            self._run(records, todo, options, workers, collect, bar, stats)
        finally:
            _restore_env(saved_env)

    def _run(self, records: Sequence[Any], todo: Sequence[int], options: Any, workers: int | None,
             collect: Callable[[list[dict[str, Any]]], None], bar: Any, stats: Any) -> None:
        ray = _import_ray(data=self.api == "data")  # after the environment is set: Ray's C++ core reads it
        t0 = time.perf_counter()
        t0_wall = time.time()
        check = _ModelCheck(options)  # a model MediaPipe refuses: one line here, while Ray starts
        with self._session(ray, workers) as n_cpus:
            stats.engine_start_s = time.perf_counter() - t0
            check.result()
            n_actors = max(1, min(self.actors or workers or n_cpus, len(todo)))
            model = Path(options.model_path)
            from .assets import sha256_of

            shipped = {"model": ray.put(model.read_bytes()), "sha256": sha256_of(model)}
            actor_options = replace(options, model_path=None, download=False)
            seen: set[int] = set()  # indices whose row was handed to collect

            def one_pass(indices: list[int], actors: int, batch: int, retries: int, alone: bool = False) -> None:
                runner = _Runner(ray, self, records, actor_options, shipped, collect, bar, stats, seen)
                runner.stream(indices, actors, batch, retries, alone)
                if runner.calls and not stats.engine_ready_s:
                    stats.engine_ready_s = max(0.0, min(start for _, start, _ in runner.calls) - t0_wall)
                # an actor restarted after dying runs in a new process: more processes than actors
                stats.n_workers_lost += max(0, len({pid for pid, _, _ in runner.calls}) - actors)

            batch = self.batch_size or max(4, min(BATCH_SIZE, -(-len(todo) // (4 * n_actors))))
            one_pass(list(todo), n_actors, batch, self.max_task_retries)
            missing = [i for i in todo if i not in seen]
            if missing:  # batches dropped after their actors kept dying: one image per task and actor, once
                stats.n_workers_lost += 1
                one_pass(missing, min(n_actors, len(missing)), 1, 0, alone=True)
            from .extract import _lost_row

            for i in [i for i in missing if i not in seen]:
                row = _lost_row(Path(records[i].path))
                row["_index"] = i
                seen.add(i)
                collect([row])
                if bar is not None:
                    bar.update(1)

    @contextlib.contextmanager
    def _session(self, ray: Any, workers: int | None) -> Iterator[int]:
        """Ray for the duration: the one already initialised, a cluster joined, or a local
        instance started (and stopped at the end). Yields the cluster's CPU count."""
        started = False
        if not ray.is_initialized():
            from .extract import default_workers

            if self.address is not None:
                _check_reachable(self.address)
            sigterm = signal.getsignal(signal.SIGTERM)  # ray.init installs its own; ours saves the work
            kwargs: dict[str, Any] = dict(
                log_to_driver=False, logging_level=logging.WARNING, runtime_env=self.runtime_env
            )
            try:
                with _quiet_ray_logs():
                    if self.address is None:
                        ray.init(
                            address="local", num_cpus=self.actors or workers or default_workers(),
                            object_store_memory=self.object_store_memory, include_dashboard=False,
                            _node_ip_address="127.0.0.1", _temp_dir=self.temp_dir, **kwargs,
                        )
                    elif _loopback(self.address):
                        with _loopback_cluster():
                            ray.init(address=self.address, _node_ip_address="127.0.0.1", **kwargs)
                    else:
                        ray.init(address=self.address, **kwargs)
                started = True
            except Exception as exc:
                where = "start a local Ray instance" if self.address is None else f"connect to Ray at {self.address}"
                raise MeshferError(f"cannot {where} ({_first_line(exc)})") from None
            finally:
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(signal.SIGTERM, sigterm)
        with _no_raylet_prints():
            try:
                yield max(1, int(ray.cluster_resources().get("CPU", 1)))
            finally:
                if started:  # a local instance is stopped; a joined cluster is left
                    with contextlib.suppress(Exception), _quiet_ray_logs():
                        ray.shutdown()


class _ModelCheck(threading.Thread):
    """Opens (and closes) a landmarker with ``options`` in a thread; :meth:`result` re-raises its error."""

    def __init__(self, options: Any) -> None:
        super().__init__(daemon=True, name="meshfer-model-check")
        self.options, self.error = options, None
        self.start()

    def run(self) -> None:
        from .landmarks import FaceLandmarker

        try:
            FaceLandmarker(self.options).close()
        except BaseException as exc:  # handed to the main thread
            self.error = exc

    def result(self) -> None:
        self.join()
        if self.error is not None:
            raise self.error


class _Runner:
    """One pass of the dataset through the actor pool."""

    def __init__(self, ray: Any, engine: RayEngine, records: Sequence[Any], options: Any, shipped: dict[str, Any],
                 collect: Callable[[list[dict[str, Any]]], None], bar: Any, stats: Any, seen: set[int]) -> None:
        self.ray, self.engine, self.records, self.options = ray, engine, records, options
        self.shipped, self.collect, self.bar, self.stats, self.seen = shipped, collect, bar, stats, seen
        self.calls: set[tuple[int, float, float]] = set()  # (actor pid, start, end) of each call

    def stream(self, indices: list[int], n_actors: int, batch_size: int, retries: int, alone: bool = False) -> None:
        """Run ``indices`` through a pool of ``n_actors``, ``batch_size`` images per task, a task
        whose actor died run again ``retries`` times. ``alone``: one task at a time per actor (the
        tasks queued on an actor die with it)."""
        try:
            with _quiet_ray_logs():
                if self.engine.api == "data":
                    self._stream_data(indices, n_actors, batch_size, retries, alone)
                else:
                    self._stream_actors(indices, n_actors, batch_size, retries, alone)
            self._count_gaps()
        except LandmarkerModelError:
            raise
        except Exception as exc:
            cause = _first_line(exc)
            if "LandmarkerModelError" in cause or "MediaPipe" in cause:
                raise LandmarkerModelError(cause) from None
            raise MeshferError(f"the Ray run failed ({cause}); what was extracted is saved") from None

    def _batch(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        return {"index": np.array(indices, np.int64),
                "path": np.array([os.fsencode(str(self.records[i].path)) for i in indices], dtype=object)}

    def _stream_actors(self, indices: list[int], n_actors: int, batch_size: int, retries: int, alone: bool) -> None:
        """Ray Core actors, each given work once it has started (so that no batch waits behind an
        actor still starting on a slow node) and then kept two batches ahead (one when ``alone``);
        a batch whose actor died more than ``retries`` times is left out (its images stay unseen)."""
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=retries)(MeshActor)
        actors = [
            remote.options(scheduling_strategy="SPREAD").remote(
                self.shipped["model"], self.shipped["sha256"], self.options, self.engine.fault)
            for _ in range(n_actors)
        ]
        queue = iter([indices[k:k + batch_size] for k in range(0, len(indices), batch_size)])
        pending: dict[Any, tuple[int, bool]] = {actor.ready.remote(): (a, True) for a, actor in enumerate(actors)}

        def submit(a: int) -> None:
            chunk = next(queue, None)
            if chunk is not None:
                pending[actors[a].__call__.remote(self._batch(chunk))] = (a, False)

        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                a, probe = pending.pop(done[0])
                try:
                    batch = ray.get(done[0])
                except ray.exceptions.RayActorError as exc:
                    if "LandmarkerModelError" in str(exc):
                        raise LandmarkerModelError(_first_line(exc)) from None
                    if getattr(exc, "actor_init_failed", False):  # its constructor raised (meshfer missing
                        # on a node, say): every actor would; the exception's own line says why
                        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                        raise MeshferError(f"a Ray actor could not start: {lines[-1] if lines else exc}") from None
                    batch = None  # its actor kept dying: the images are retried one by one
                if probe:
                    for _ in range(1 if alone else 2):
                        submit(a)
                    continue
                if batch is not None:
                    self._take(batch)
                submit(a)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)

    def _stream_data(self, indices: list[int], n_actors: int, batch_size: int, retries: int, alone: bool) -> None:
        """Ray Data: a dataset of the rows through ``map_batches`` on an actor pool."""
        import ray.data

        items = [{"index": int(i), "path": os.fsencode(str(self.records[i].path))} for i in indices]
        n_blocks = max(1, min(len(items), -(-len(items) // max(1, batch_size)), 20_000))
        ctx = ray.data.DataContext.get_current()
        saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "max_errored_blocks", "print_on_execution_start")}
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.max_errored_blocks = -1  # a batch whose actor keeps dying is dropped; its images are retried
        try:
            with warnings.catch_warnings():
                # max_restarts / max_task_retries have no named parameter in Ray 2.60 yet
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*is deprecated")
                ds = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
                    MeshActor,
                    fn_constructor_kwargs={
                        "model": self.shipped["model"], "sha256": self.shipped["sha256"], "options": self.options,
                        "fault": self.engine.fault,
                    },
                    batch_size=batch_size,
                    batch_format="numpy",
                    compute=ray.data.ActorPoolStrategy(size=n_actors, max_tasks_in_flight_per_actor=1 if alone else None),
                    num_cpus=1,
                    max_restarts=-1,
                    max_task_retries=retries,
                    scheduling_strategy="SPREAD",
                )
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    self._take(batch)
        finally:
            for k, v in saved.items():
                setattr(ctx, k, v)

    def _count_gaps(self) -> None:
        """Calls and idle time between consecutive calls of each actor into ``stats``."""
        by_actor: dict[int, list[tuple[float, float]]] = {}
        for pid, start, end in self.calls:
            by_actor.setdefault(pid, []).append((start, end))
        for spans in by_actor.values():
            spans.sort()
            self.stats.actor_gap_s += sum(max(0.0, b[0] - a[1]) for a, b in zip(spans, spans[1:]))
        self.stats.n_batches += len(self.calls)

    def _take(self, batch: dict[str, np.ndarray]) -> None:
        rows = []
        for row in decode_batch(batch):
            if "fatal" in row:
                raise LandmarkerModelError(row["fatal"])
            i = row["_index"]
            if i in self.seen:  # a batch run twice (its actor died after it was sent): keep one
                continue
            self.seen.add(i)
            row["path"] = str(self.records[i].path)
            rows.append(row)
        if not rows:
            return
        for pid, start, end in zip(batch["pid"], batch["call_start"], batch["call_end"]):
            self.calls.add((int(pid), float(start), float(end)))  # a block may hold several calls
        nodes = {str(n) for n in batch.get("node", ())}
        if not nodes.issubset(self.stats.engine_nodes):  # as they come: a test watches them mid-run
            self.stats.engine_nodes = sorted(nodes.union(self.stats.engine_nodes))
        self.stats.worker_s += sum(r.pop("worker_s", 0.0) for r in rows)
        self.collect(rows)
        if self.bar is not None:
            self.bar.update(len(rows))


# ------------------------------------------------------------------------------------------------
# On the actors


class MeshActor:
    """A Ray Data callable class: one landmarker per actor, one batch of (index, path) rows in, the
    same rows out as :func:`meshfer.extract.process_image` gives, as columns (see :func:`encode_rows`)."""

    def __init__(self, model: Any, sha256: str, options: Any, fault: tuple[str | None, str] | None = None) -> None:
        import ray

        from .landmarks import FaceLandmarker

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
        if fault is not None and fault[1] == "<init>":
            raise ImportError("injected: this actor cannot start")
        data = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        path = _model_file(data, sha256)
        self.options = replace(options, model_path=path, download=False)
        self.landmarker = FaceLandmarker(self.options)
        self.side = self.options.crop.size if self.options.crop is not None else 0
        self.fault = fault
        self.node = ray.get_runtime_context().get_node_id()

    def ready(self) -> str:
        """This actor's node (a call that returns once the landmarker is loaded)."""
        return self.node

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .extract import process_image

        start = time.time()
        rows = []
        for index, raw in zip(batch["index"], batch["path"]):
            path = os.fsdecode(bytes(raw))
            self._maybe_fail(path)
            t = time.perf_counter()
            try:
                row = process_image(self.landmarker, path)
            except LandmarkerModelError as exc:
                row = {"path": path, "fatal": str(exc)}
            row["worker_s"] = time.perf_counter() - t
            row["_index"] = int(index)
            rows.append(row)
        out = encode_rows(rows, self.side)
        out["pid"] = np.full(len(rows), os.getpid(), np.int64)
        out["call_start"] = np.full(len(rows), start)
        out["call_end"] = np.full(len(rows), time.time())
        out["node"] = np.array([self.node] * len(rows), dtype=object)
        return out

    def _maybe_fail(self, path: str) -> None:
        if self.fault is None or os.path.basename(path) != self.fault[1]:
            return
        marker = self.fault[0]
        if marker is not None:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os._exit(1)


def _model_file(data: bytes, sha256: str) -> Path:
    """The shipped landmarker, written once per node (and per model) into the temporary folder."""
    import hashlib

    if hashlib.sha256(data).hexdigest() != sha256:
        raise LandmarkerModelError("the landmarker model sent with the job arrived damaged (SHA-256 differs)")
    folder = Path(tempfile.gettempdir()) / f"meshfer-landmarker-{sha256[:16]}"
    path = folder / "face_landmarker.task"
    if path.is_file() and path.stat().st_size == len(data):
        return path
    from ._io import atomic_write

    with atomic_write(path) as f:
        f.write(data)
    return path


# ------------------------------------------------------------------------------------------------
# Rows <-> columns (what travels between actors and driver)

_INFO_KEYS = ("status", "error", "file_size", "mtime_ns", "image_size", "read_s", "inference_s", "worker_s",
              "messages", "fatal")


def encode_rows(rows: list[dict[str, Any]], side: int) -> dict[str, np.ndarray]:
    """Rows of :func:`~meshfer.extract.process_image` (with ``_index``) as a batch of columns:
    ``index``, ``info`` (one ASCII JSON object per row: status, error, stat, timings, messages;
    file names that are not valid UTF-8 survive), ``landmarks``, ``blendshapes``, ``transforms``
    (NaN without a face) and ``crops`` when ``side`` > 0."""
    from .landmarks import BLENDSHAPE_NAMES, NUM_LANDMARKS

    n = len(rows)
    lm = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
    bs = np.full((n, len(BLENDSHAPE_NAMES)), np.nan, np.float32)
    tf = np.full((n, 4, 4), np.nan, np.float32)
    crops = np.zeros((n, side, side), np.uint8)
    info = []
    for i, row in enumerate(rows):
        item = {k: row[k] for k in _INFO_KEYS if k in row}
        mesh = row.get("mesh")
        if mesh is not None:
            lm[i], bs[i], tf[i] = mesh.landmarks, mesh.blendshapes, mesh.transform
            item["mesh"] = {"image_size": list(mesh.image_size), "attempt": mesh.attempt,
                            "faces_found": int(mesh.faces_found), "crop": mesh.crop is not None}
            if side and mesh.crop is not None:
                crops[i] = mesh.crop
        if "image_size" in item:
            item["image_size"] = [int(v) for v in item["image_size"]]
        info.append(json.dumps(item, ensure_ascii=True))
    out = {
        "index": np.array([int(r["_index"]) for r in rows], np.int64),
        "info": np.array(info, dtype=object),
        "landmarks": lm, "blendshapes": bs, "transforms": tf,
    }
    if side:
        out["crops"] = crops
    return out


def decode_batch(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The rows of a batch made by :func:`encode_rows` (``mesh`` a FaceMesh again)."""
    from .landmarks import FaceMesh

    rows = []
    crops = batch.get("crops")
    for i, (index, text) in enumerate(zip(batch["index"], batch["info"])):
        item = json.loads(text if isinstance(text, str) else bytes(text).decode("ascii"))
        row: dict[str, Any] = {"_index": int(index)}
        mesh = item.pop("mesh", None)
        row.update(item)
        if "image_size" in row:
            row["image_size"] = tuple(row["image_size"])
        row.pop("path", None)
        if mesh is not None:
            crop = None
            if mesh["crop"] and crops is not None and crops.shape[1] > 0:
                crop = np.array(crops[i], np.uint8)
            row["mesh"] = FaceMesh(
                np.array(batch["landmarks"][i], np.float32), np.array(batch["blendshapes"][i], np.float32),
                np.array(batch["transforms"][i], np.float32), tuple(mesh["image_size"]), mesh["attempt"], crop,
                int(mesh["faces_found"]),
            )
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------


def engine_from_env() -> RayEngine | None:
    """The engine named by :data:`ENV_ENGINE` (None: the local one); MeshferError for another name."""
    name = (os.environ.get(ENV_ENGINE) or "local").strip().lower()
    if name == "local":
        return None
    if name == "ray":
        return RayEngine(address=os.environ.get(ENV_ADDRESS) or None)
    raise MeshferError(f"${ENV_ENGINE}={name!r}: the extraction engine must be 'local' or 'ray'")


def _import_ray(data: bool = False) -> Any:
    """Ray (and Ray Data when ``data``: seconds of imports the default engine does without)."""
    try:
        import ray

        if data:
            import ray.data  # noqa: F401
    except ImportError as exc:
        raise MeshferError(
            f"the Ray engine needs Ray Data ({exc}); install it with: python -m pip install 'meshfer[ray]'"
        ) from None
    return ray


def _push_env(values: dict[str, str]) -> dict[str, str | None]:
    """Set environment variables; the previous values, for :func:`_restore_env`."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return saved


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line MeshferError when nothing listens at a ``HOST:PORT`` or ``ray://HOST:PORT``
    address (Ray itself would retry for minutes); ``auto`` and other forms are left to Ray."""
    import socket

    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or "/" in text:
        return
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise MeshferError(f"cannot connect to Ray at {address} ({reason}; is the cluster running?)") from None


def _loopback(address: str) -> bool:
    """Whether a ``HOST:PORT`` address (not Ray Client's ``ray://``) names this machine's loopback."""
    host = address.rpartition(":")[0].strip("[]")
    return not address.startswith("ray://") and host in ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def _loopback_cluster() -> Iterator[None]:
    """Ray rewrites a loopback address to this machine's outer IP, where a cluster bound to
    127.0.0.1 (``ray start --node-ip-address=127.0.0.1``) does not listen: for the duration, this
    machine's address is its loopback, as Ray has it on machines without cluster support."""
    import ray._private.ray_constants as constants

    saved = constants.ENABLE_RAY_CLUSTER
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Ray's and Ray Data's Python log lines (execution plans, ignored failed blocks with their
    tracebacks) off the console for the duration: meshfer reports what happened itself."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data", "ray._private", "ray.util")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _no_raylet_prints() -> Iterator[None]:
    """Ray's driver prints the cluster's error messages ("task failed, will be retried", actors
    killed when a dataset ends) on *standard output*, where they would break ``--json``; for the
    duration they are dropped (meshfer counts lost actors and reports images itself)."""
    try:
        import ray._private.worker as ray_worker
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None:  # pragma: no cover - another Ray version
        yield
        return

    def drop(data: Any, ignore_prefix: bool = False) -> None:
        return None

    ray_worker.print_to_stdstream = drop
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:  # Ray wraps the cause: prefer the line that names it
        if "LandmarkerModelError" in line or "MeshferError" in line:
            return line.split(":", 1)[-1].strip() if line.startswith(("ray.", "meshfer.")) else line
    return lines[0] if lines else type(exc).__name__
