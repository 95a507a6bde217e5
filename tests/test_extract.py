"""Extraction at scale: bad inputs reported and skipped, the cache, interruption, workers, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO
import meshfer.extract as extract_module
from meshfer.errors import MeshferError
from meshfer.extract import ExtractStats, extract
from meshfer.meshtable import MeshTable


def _add_bad_inputs(root: Path) -> None:
    (root / "face_happy" / "text.jpg").write_text("not a jpeg")
    cv2.imwrite(str(root / "face_sad" / "blank.png"), np.full((200, 200, 3), 127, np.uint8))
    (root / "face_fear" / "notes.txt").write_text("skip me")
    (root / "face_empty").mkdir()


def test_bad_inputs_are_reported_and_the_run_goes_on(small_dataset: Path, tmp_path: Path) -> None:
    _add_bad_inputs(small_dataset)
    table = extract(small_dataset, tmp_path / "m.npz", workers=1, progress=False)
    summary = table.summary()
    assert summary["n_images"] == 23
    assert summary["per_class"]["happy"]["unreadable"] == 1
    assert summary["per_class"]["sad"]["no_face"] >= 1
    assert summary["per_class"]["empty"]["images"] == 0
    failed = {Path(f["file"]).name: f["reason"] for f in summary["failed"]}
    assert failed["text.jpg"] == "not a readable image" and failed["blank.png"] == "no face found"
    skipped = {Path(s["file"]).name for s in table.meta["skipped"]}
    assert skipped == {"notes.txt", "face_empty"}
    assert summary["n_faces"] >= 18
    ok = table.found
    assert np.isfinite(table.landmarks[ok]).all() and np.isnan(table.landmarks[~ok]).all()


def test_cache_rerun_processes_nothing_then_only_changes(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.npz"
    first = extract(small_dataset, out, workers=1, progress=False)
    stats = ExtractStats()
    second = extract(small_dataset, out, workers=1, progress=False, stats=stats)
    assert stats.n_processed == 0 and stats.n_cached == len(first) == 21
    assert np.array_equal(first.paths, second.paths)
    assert np.allclose(first.landmarks, second.landmarks, equal_nan=True)
    # touch one file, add one, delete one: only the new and changed ones are processed
    files = sorted((small_dataset / "face_happy").iterdir())
    os.utime(files[0], ns=(files[0].stat().st_atime_ns, files[0].stat().st_mtime_ns + 10**9))
    (small_dataset / "face_happy" / "copy.jpg").write_bytes(files[1].read_bytes())
    files[2].unlink()
    stats = ExtractStats()
    third = extract(small_dataset, out, workers=1, progress=False, stats=stats)
    assert stats.n_processed == 2 and len(third) == 21


def test_cache_ignores_results_of_another_landmarker_configuration(small_dataset: Path, tmp_path: Path) -> None:
    from meshfer.landmarks import DEFAULT_ATTEMPTS, LandmarkerOptions

    out = tmp_path / "m.npz"
    extract(small_dataset, out, workers=1, progress=False)
    stats = ExtractStats()
    extract(small_dataset, out, workers=1, progress=False, stats=stats,
            options=LandmarkerOptions(attempts=DEFAULT_ATTEMPTS[:1]))
    assert stats.n_processed == 21


def test_refuses_to_overwrite_a_foreign_output(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious.npz"
    np.savez(out, data=np.arange(3))
    before = out.read_bytes()
    with pytest.raises(MeshferError, match="refusing to overwrite"):
        extract(small_dataset, out, workers=1, progress=False)
    assert out.read_bytes() == before


def test_interruption_keeps_what_was_extracted(small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "m.npz"
    real = extract_module.process_image
    calls = {"n": 0}

    def flaky(landmarker, path):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real(landmarker, path)

    monkeypatch.setattr(extract_module, "process_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract(small_dataset, out, workers=1, progress=False, checkpoint_every=3)
    saved = MeshTable.load(out)
    assert len(saved) == 7 and saved.meta["complete"] is False
    monkeypatch.setattr(extract_module, "process_image", real)
    stats = ExtractStats()
    table = extract(small_dataset, out, workers=1, progress=False, stats=stats)
    assert stats.n_processed == 14 and len(table) == 21 and table.meta["complete"] is True
    assert not (tmp_path / "m.npz.parts").exists()


def test_two_workers_give_the_same_meshes_as_one(small_dataset: Path) -> None:
    one = extract(small_dataset, None, workers=1, progress=False)
    two = extract(small_dataset, None, workers=2, progress=False)
    assert np.array_equal(one.paths, two.paths) and np.array_equal(one.status, two.status)
    assert np.allclose(one.landmarks, two.landmarks, atol=1e-5, equal_nan=True)


def test_meshtable_roundtrip_and_dataframe(small_dataset: Path, tmp_path: Path) -> None:
    table = extract(small_dataset, None, workers=1, progress=False)
    table.save(tmp_path / "t.npz")
    back = MeshTable.load(tmp_path / "t.npz")
    assert back.meta["labels"] == table.meta["labels"] and np.array_equal(back.y, table.y)
    frame = back.to_dataframe(transforms=True)
    assert list(frame.columns.get_level_values(0).unique()) == ["image", "landmarks", "blendshapes", "transform"]
    assert frame.shape == (21, 8 + 478 * 3 + 52 + 16)
    assert frame[("image", "label")].tolist() == back.labels.tolist()
    mesh = back.mesh(int(np.flatnonzero(back.found)[0]))
    assert mesh is not None and mesh.landmarks.shape == (478, 3)
    with pytest.raises(MeshferError, match="not a meshfer mesh file"):
        np.savez(tmp_path / "other.npz", x=np.zeros(2))
        MeshTable.load(tmp_path / "other.npz")


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meshfer", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def test_cli_extract_json_summary_and_fast_rerun(small_dataset: Path, tmp_path: Path) -> None:
    _add_bad_inputs(small_dataset)
    out = tmp_path / "val.npz"
    proc = _cli("extract", str(small_dataset), "-o", str(out), "--json", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for key in ("n_images", "n_faces", "coverage", "per_class", "failed"):
        assert key in summary
    assert summary["n_images"] == 23 and summary["processed"] == 23
    assert "notes.txt" in proc.stderr and "face_empty" in proc.stderr  # skipped files reported by name
    again = json.loads(_cli("extract", str(small_dataset), "-o", str(out), "--json").stdout)
    assert again["processed"] == 0 and again["cached"] == 23 and again["n_faces"] == summary["n_faces"]


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    proc = _cli("extract", str(tmp_path / "missing"), "-o", str(tmp_path / "x.npz"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing: no such folder" in proc.stderr
    bad = tmp_path / "bad.task"
    bad.write_text("nope")
    (tmp_path / "d" / "face_x").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "d" / "face_x" / "a.png"), np.zeros((10, 10, 3), np.uint8))
    proc = _cli("extract", str(tmp_path / "d"), "-o", str(tmp_path / "x.npz"), "--landmarker", str(bad))
    assert proc.returncode == 2 and "bad.task" in proc.stderr and "Traceback" not in proc.stderr


def test_a_big_table_is_saved_sharded_and_loads_back(small_dataset: Path, tmp_path: Path) -> None:
    from meshfer.meshtable import FORMAT_SHARDED

    table = extract(small_dataset, None, workers=1, progress=False)
    out = tmp_path / "m.npz"
    table.save(out, shard_bytes=table.nbytes // 4)
    folders = list(tmp_path.glob("m.npz.shards-*"))
    assert len(folders) == 1 and len(list(folders[0].glob("part-*.npz"))) >= 4
    with np.load(out, allow_pickle=False) as data:
        assert str(data["format"]) == FORMAT_SHARDED and "landmarks" not in data.files  # a small manifest
    back = MeshTable.load(out)
    assert MeshTable.is_meshtable_file(out) and back.meta == table.meta
    for name in ("paths", "labels", "status", "errors", "crops", "faces_found", "mtimes_ns"):
        assert np.array_equal(getattr(back, name), getattr(table, name)), name
    assert np.allclose(back.landmarks, table.landmarks, equal_nan=True)
    table.save(out, shard_bytes=table.nbytes // 3)  # saved again: the new parts replace the old ones
    assert len(list(tmp_path.glob("m.npz.shards-*"))) == 1 and not folders[0].exists()
    table.save(out)  # small enough for one file: the parts go
    assert not list(tmp_path.glob("m.npz.shards-*")) and len(MeshTable.load(out)) == 21
    table.save(out, shard_bytes=table.nbytes // 4)
    part = next(next(tmp_path.glob("m.npz.shards-*")).glob("part-00001.npz"))
    part.unlink()
    with pytest.raises(MeshferError, match="part-00001.npz of this sharded mesh file is missing"):
        MeshTable.load(out)


def test_extract_writes_a_sharded_output_above_the_threshold_and_uses_it_as_cache(
    small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import meshfer.meshtable as meshtable_module

    monkeypatch.setattr(meshtable_module, "SHARD_BYTES", 50_000)
    monkeypatch.setattr(meshtable_module, "PART_BYTES", 50_000)
    out = tmp_path / "m.npz"
    first = extract(small_dataset, out, workers=1, progress=False)
    assert len(list(next(tmp_path.glob("m.npz.shards-*")).glob("part-*.npz"))) >= 3
    stats = ExtractStats()
    second = extract(small_dataset, out, workers=1, progress=False, stats=stats)
    assert stats.n_processed == 0 and stats.n_cached == 21 and np.array_equal(first.paths, second.paths)
    (small_dataset / "face_happy" / "copy.jpg").write_bytes(sorted((small_dataset / "face_happy").iterdir())[0].read_bytes())
    stats = ExtractStats()
    third = extract(small_dataset, out, workers=1, progress=False, stats=stats)
    assert stats.n_processed == 1 and len(MeshTable.load(out)) == len(third) == 22
    assert len(list(tmp_path.glob("m.npz.shards-*"))) == 1  # the earlier parts were replaced
