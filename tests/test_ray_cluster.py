"""Extraction on a real Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``,
127.0.0.1): actors on both nodes, the landmarker shipped to the second node through the object
store, the local engine's meshes, and the second node killed mid-run still yields every image
exactly once.

The cluster is started and stopped by this module; the driver joins it by address, as
``meshfer extract --engine ray --address HOST:PORT`` does.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from conftest import PHOTOS, sample_images

ray = pytest.importorskip("ray")

from meshfer.extract import ExtractStats, extract  # noqa: E402
from meshfer.meshtable import MeshTable  # noqa: E402
from meshfer.ray_engine import RayEngine  # noqa: E402

from test_ray_engine import assert_same_table, ray_test_env  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    """A head node (2 CPUs) and a worker node (1 CPU), both on 127.0.0.1, no dashboard."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    with ray_test_env("mrc-") as temp:
        common = dict(node_ip_address="127.0.0.1", object_store_memory=150 * 2**20, temp_dir=temp)
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, include_dashboard=False, **common))
        try:
            worker = cluster.add_node(num_cpus=1, **common)
            cluster.wait_for_nodes()
            yield cluster, worker
        finally:
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve photos, each under 25 names (300 images: enough work that the second node, whose
    actor starts seconds after the head's on this 2-core machine, gets its share)."""
    root = tmp_path_factory.mktemp("rc") / "data"
    for label, files in sample_images(PHOTOS, 2).items():
        (root / f"face_{label}").mkdir(parents=True)
        for f in files:
            for k in range(25):
                shutil.copy2(f, root / f"face_{label}" / f"{k}_{f.name}")
    return root


class _KillSecondNode(RayEngine):
    """Removes the cluster's worker node (its raylet, object store and actor) once both nodes have
    sent back rows."""

    cluster = None
    node = None
    killed = threading.Event()
    rows_before_kill = 0

    def run(self, records, todo, options, workers, collect, bar, stats):  # type: ignore[override]
        cls = type(self)
        seen = [0]

        def collect_then_kill(rows):
            collect(rows)
            seen[0] += len(rows)
            if len(stats.engine_nodes) >= 2 and not cls.killed.is_set():
                cls.killed.set()
                cls.rows_before_kill = seen[0]
                cls.cluster.remove_node(cls.node, allow_graceful=False)

        return super().run(records, todo, options, workers, collect_then_kill, bar, stats)


def test_two_nodes_then_one(two_nodes, faces: Path, tmp_path: Path) -> None:
    cluster, worker = two_nodes
    reference = extract(faces, None, workers=2, progress=False)

    # Both nodes work, the second one with the landmarker it got from the object store.
    stats = ExtractStats()
    table = extract(faces, tmp_path / "a.npz", workers=2, progress=False, stats=stats,
                    engine=RayEngine(address=cluster.address, batch_size=4))
    assert len(stats.engine_nodes) == 2, stats.engine_nodes
    assert worker.node_id in stats.engine_nodes
    assert_same_table(reference, table)

    # The second node killed mid-run: every image exactly once, the same meshes.
    _KillSecondNode.cluster, _KillSecondNode.node = cluster, worker
    stats = ExtractStats()
    out = tmp_path / "b.npz"
    table = extract(faces, out, workers=2, progress=False, stats=stats,
                    engine=_KillSecondNode(address=cluster.address, batch_size=4))
    assert _KillSecondNode.killed.is_set() and 0 < _KillSecondNode.rows_before_kill < len(reference) - 40
    assert worker.node_id in stats.engine_nodes  # it had worked before it was killed
    assert worker.node_id not in {n["NodeID"] for n in ray.nodes() if n["Alive"]} if ray.is_initialized() else True
    assert len(set(map(str, table.paths))) == len(table.paths) == len(reference)
    assert_same_table(reference, table)
    assert_same_table(reference, MeshTable.load(out))
    assert stats.n_processed == len(reference)
