"""Extraction on Ray (``engine="ray"``, ``meshfer extract --engine ray``): the same table as the
local engine, every image exactly once when an actor dies, nothing sent to Ray for a cached re-run,
an interrupted run kept, and the CLI joining a running cluster or starting (and stopping) its own.

A local Ray instance bound to 127.0.0.1 (no dashboard, a small object store, its own temporary
folder) is started once for the module and stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

from conftest import FER_VAL, LANDMARKER, PHOTOS, REPO, sample_images

ray = pytest.importorskip("ray")

from meshfer.extract import WORKER_DIED, ExtractStats, extract  # noqa: E402
from meshfer.meshtable import MeshTable  # noqa: E402
from meshfer.ray_engine import RayEngine  # noqa: E402

NON_UTF8 = os.fsdecode(b"caf\xe9.jpg")


@contextlib.contextmanager
def ray_test_env(prefix: str) -> Iterator[str]:
    """A short temporary folder for Ray (its socket paths must fit 107 bytes), no usage statistics
    and no C++ log lines for the duration; the folder and the variables are restored after."""
    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("RAY_USAGE_STATS_ENABLED", "RAY_BACKEND_LOG_LEVEL")}
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_BACKEND_LOG_LEVEL="fatal")
    try:
        yield temp
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance for this module: 127.0.0.1, 2 CPUs, no dashboard, no usage stats."""
    with ray_test_env("mray-") as temp:
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
                 _node_ip_address="127.0.0.1", _temp_dir=temp, log_to_driver=False, logging_level=logging.WARNING)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few dozen real images: 3 FER-2013 faces per class, 6 photos, a file that is not an image,
    a faceless image and a file name that is not valid UTF-8."""
    root = tmp_path_factory.mktemp("raydata") / "data"
    for label, files in sample_images(FER_VAL, 3).items():
        (root / f"face_{label}").mkdir(parents=True)
        for f in files:
            shutil.copy2(f, root / f"face_{label}" / f.name)
    for label, files in sample_images(PHOTOS, 2).items():
        if label in ("happy", "sad", "surprised"):
            for f in files:
                shutil.copy2(f, root / f"face_{label}" / f"photo_{f.name}")
    (root / "face_happy" / "text.jpg").write_text("not a jpeg")
    cv2.imwrite(str(root / "face_sad" / "blank.png"), np.full((120, 160, 3), 127, np.uint8))
    shutil.copy2(sorted((FER_VAL / "face_fear").iterdir())[5], root / "face_fear" / NON_UTF8)
    return root


@pytest.fixture(scope="module")
def reference(mixed_data: Path) -> MeshTable:
    """What the local engine makes of ``mixed_data``."""
    return extract(mixed_data, None, workers=1, progress=False)


def assert_same_table(a: MeshTable, b: MeshTable) -> None:
    for name in ("paths", "labels", "groups", "status", "errors", "attempts", "faces_found", "image_sizes",
                 "file_sizes", "mtimes_ns"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.allclose(a.landmarks, b.landmarks, atol=1e-4, equal_nan=True)
    assert np.allclose(a.blendshapes, b.blendshapes, atol=1e-4, equal_nan=True)
    assert a.has_crops and np.array_equal(a.crops.shape, b.crops.shape)
    assert np.abs(a.crops.astype(int) - b.crops.astype(int)).max() <= 1


@pytest.mark.parametrize("api", ["actors", "data"])
def test_ray_engine_gives_the_local_engines_table(ray_cluster, mixed_data: Path, reference: MeshTable,
                                                 tmp_path: Path, api: str) -> None:
    out = tmp_path / "m.npz"
    stats = ExtractStats()
    engine = "ray" if api == "actors" else RayEngine(api=api)  # "ray": the default engine, Ray Core actors
    table = extract(mixed_data, out, workers=2, engine=engine, progress=False, stats=stats)
    assert stats.engine == "ray" and stats.n_processed == len(reference) == 30
    assert_same_table(reference, table)
    assert_same_table(reference, MeshTable.load(out))
    failed = {Path(f["file"]).name: f["reason"] for f in table.summary()["failed"]}
    assert failed["text.jpg"] == "not a readable image" and failed["blank.png"] == "no face found"
    assert NON_UTF8 in {Path(p).name for p in table.paths}
    assert stats.n_batches >= 2 and stats.worker_s > 0 and stats.inference_s > 0
    assert stats.engine_nodes == [ray.get_runtime_context().get_node_id()]


def test_an_actor_killed_mid_run_costs_no_image(ray_cluster, mixed_data: Path, reference: MeshTable,
                                                 tmp_path: Path) -> None:
    marker = tmp_path / "died"
    victim = Path(str(reference.paths[12])).name  # an actor ends its process when it reaches this image, once
    table = extract(mixed_data, None, workers=2, progress=False,
                    engine=RayEngine(fault=(str(marker), victim), batch_size=4))
    assert marker.exists()  # an actor really died
    assert len(set(table.paths)) == len(table.paths) == len(reference)  # every image exactly once
    assert_same_table(reference, table)


def test_an_image_that_kills_every_actor_is_reported_by_name(ray_cluster, mixed_data: Path, reference: MeshTable) -> None:
    victim = Path(str(reference.paths[3])).name
    stats = ExtractStats()
    table = extract(mixed_data, None, workers=2, progress=False, stats=stats,
                    engine=RayEngine(fault=(None, victim), batch_size=4, max_task_retries=0))
    assert len(set(table.paths)) == len(table.paths) == len(reference)
    i = list(map(str, table.paths)).index(str(reference.paths[3]))
    assert table.status[i] == "unreadable" and table.errors[i] == WORKER_DIED
    others = np.arange(len(table)) != i
    assert_same_table(reference.subset(others), table.subset(others))
    assert stats.n_workers_lost >= 1


def test_actors_that_cannot_start_end_the_run_with_the_reason(ray_cluster, mixed_data: Path) -> None:
    from meshfer.errors import MeshferError

    with pytest.raises(MeshferError, match="a Ray actor could not start: ImportError: injected"):
        extract(mixed_data, None, workers=2, progress=False, engine=RayEngine(fault=(None, "<init>")))


class _Spy(RayEngine):
    """A RayEngine that counts its runs and the images sent (and can stop the run early)."""

    calls: list[int] = []

    def run(self, records, todo, options, workers, collect, bar, stats):  # type: ignore[override]
        type(self).calls.append(len(todo))
        return super().run(records, todo, options, workers, collect, bar, stats)


def test_a_cached_rerun_sends_no_work_to_ray(ray_cluster, mixed_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(mixed_data, data)
    out = tmp_path / "m.npz"
    first = extract(data, out, workers=1, progress=False)  # either engine's output is the other's cache
    _Spy.calls = []
    stats = ExtractStats()
    second = extract(data, out, workers=2, progress=False, engine=_Spy(), stats=stats)
    assert _Spy.calls == [] and stats.n_processed == 0 and stats.n_cached == 30
    assert_same_table(first, second)
    photo = next((data / "face_happy").glob("photo_*"))
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    stats = ExtractStats()
    extract(data, out, workers=2, progress=False, engine=_Spy(), stats=stats)
    assert _Spy.calls == [1] and stats.n_processed == 1  # only the changed image went to Ray


class _Interrupting(RayEngine):
    """Ctrl-C in the driver after the first batch of results."""

    def run(self, records, todo, options, workers, collect, bar, stats):  # type: ignore[override]
        def collect_then_stop(rows):
            collect(rows)
            raise KeyboardInterrupt

        return super().run(records, todo, options, workers, collect_then_stop, bar, stats)


def test_an_interrupted_ray_run_keeps_what_was_finished(ray_cluster, mixed_data: Path, reference: MeshTable,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "m.npz"
    with pytest.raises(KeyboardInterrupt):
        extract(mixed_data, out, workers=2, progress=False, engine=_Interrupting(batch_size=4))
    saved = MeshTable.load(out)
    assert 1 <= len(saved) < len(reference) and saved.meta["complete"] is False
    stats = ExtractStats()
    table = extract(mixed_data, out, workers=2, progress=False, engine="ray", stats=stats)
    assert stats.n_cached == len(saved) and stats.n_processed == len(reference) - len(saved)
    assert table.meta["complete"] is True
    assert_same_table(reference, table)


def _cli(*args: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshfer", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env={**os.environ, "MESHFER_LANDMARKER": str(LANDMARKER), **(env or {})})


def test_cli_extract_joins_a_running_cluster(ray_cluster: str, mixed_data: Path, reference: MeshTable,
                                             tmp_path: Path) -> None:
    out = tmp_path / "m.npz"
    proc = _cli("extract", str(mixed_data), "-o", str(out), "--engine", "ray", "--address", ray_cluster, "--json",
                "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "core_worker" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["engine"] == "ray" and summary["processed"] == 30
    assert summary["n_faces"] == reference.summary()["n_faces"]
    assert_same_table(reference, MeshTable.load(out))


def test_cli_bad_address_is_one_line(tmp_path: Path, mixed_data: Path) -> None:
    proc = _cli("extract", str(mixed_data), "-o", str(tmp_path / "m.npz"), "--engine", "local", "--address", "auto")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--engine ray" in proc.stderr
    proc = _cli("extract", str(mixed_data), "-o", str(tmp_path / "m.npz"), "--engine", "ray", "--address",
                "127.0.0.1:9", "--no-progress")  # nothing listens there: one line at once, not minutes of retries
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "cannot connect to Ray at 127.0.0.1:9" in proc.stderr
    assert not (tmp_path / "m.npz").exists()  # no empty output left behind


def test_cli_starts_and_stops_its_own_local_ray_instance(mixed_data: Path, reference: MeshTable, tmp_path: Path) -> None:
    import psutil

    temp = tempfile.mkdtemp(prefix="mray-", dir="/tmp")
    try:
        out = tmp_path / "m.npz"
        proc = _cli("extract", str(mixed_data), "-o", str(out), "--engine", "ray", "--workers", "2", "--json",
                    env={"RAY_TMPDIR": temp})
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr
        assert json.loads(proc.stdout)["processed"] == 30
        assert_same_table(reference, MeshTable.load(out))
        assert list(Path(temp).glob("ray/session_*")), "the run used its own Ray instance"
        left = [p for p in psutil.process_iter(["cmdline"]) if temp in " ".join(p.info["cmdline"] or [])]
        assert not left, [p.info["cmdline"][:2] for p in left]  # every Ray process of the run has ended
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_import_meshfer_does_not_import_ray() -> None:
    code = ("import sys, meshfer, meshfer.extract, meshfer.ray_engine, meshfer.cli; "
            "from meshfer.ray_engine import RayEngine; RayEngine(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_an_unknown_ray_api_is_one_line(mixed_data: Path) -> None:
    from meshfer.errors import MeshferError

    with pytest.raises(MeshferError, match="choose one of actors, data"):
        extract(mixed_data, None, workers=1, progress=False, engine=RayEngine(api="spark"))


def test_the_engine_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from meshfer.cli._common import engine_to_env
    from meshfer.errors import MeshferError
    from meshfer.extract import _engine

    # setenv first, so that monkeypatch restores both (unset) after engine_to_env wrote them directly
    for name in ("MESHFER_ENGINE", "MESHFER_RAY_ADDRESS"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert _engine(None) is None and _engine("local") is None and isinstance(_engine("ray"), RayEngine)
    engine_to_env(argparse.Namespace(engine="ray", address="ray://head:10001"))  # what `meshfer train` does
    engine = _engine(None)  # what extract_folder, the notebooks and the recipes get
    assert isinstance(engine, RayEngine) and engine.address == "ray://head:10001"
    monkeypatch.setenv("MESHFER_ENGINE", "spark")
    with pytest.raises(MeshferError, match="must be 'local' or 'ray'"):
        _engine(None)
