"""augment.py (both ways of use) and meshfer.augment, on temporary copies of real images; and the
rule that a split never separates an augmented copy from its source."""

from __future__ import annotations

import re
from dataclasses import replace
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FER_VAL, REPO, sample_images

SCRIPT = REPO / "augment.py"


def _folder(root: Path, n: int = 4, offset: int = 0, label: str = "sad") -> Path:
    """``root/face_<label>`` with ``n`` real FER-2013 images."""
    folder = root / f"face_{label}"
    folder.mkdir(parents=True)
    for f in sample_images(FER_VAL, n, offset)[label]:
        shutil.copy2(f, folder / f.name)
    return folder


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _augmented(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("augmented"))


def test_script_with_arguments(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 3)
    sources = sorted(p.name for p in folder.iterdir())
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    result = _run([str(SCRIPT), "face_sad", "--limit", "5", "--seed", "0", "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stderr
    # One line naming the unreadable file; the run went on.
    assert [line for line in result.stderr.splitlines() if "broken.jpg" in line] == [
        f"skipped face_sad/broken.jpg: not a readable image"
    ]
    written = _augmented(folder)
    assert len(written) == 5
    # Round-robin: every source gets a first copy before any gets a second.
    assert {f"augmented_{s}" for s in sources} <= set(written)
    assert len([w for w in written if w.startswith("augmented2_")]) == 2
    assert "5 augmented copies written from 4 source images (1 unreadable skipped)" in result.stdout
    # The copies are real images of the same size, not the originals.
    import cv2

    for name in written:
        src = re.sub(r"^augmented\d*_", "", name)
        a = cv2.imread(str(folder / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(folder / src), cv2.IMREAD_UNCHANGED)
        assert a is not None and a.shape == b.shape
        assert not np.array_equal(a, b)


def test_script_with_edited_globals(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 3, label="happy")
    text = SCRIPT.read_text()
    text, n1 = re.subn(r'^FOLDER = .*$', 'FOLDER = "face_happy"', text, count=1, flags=re.M)
    text, n2 = re.subn(r'^LIMIT(: [^=]+)? = .*$', "LIMIT = 2", text, count=1, flags=re.M)
    text, n3 = re.subn(r'^SEED = .*$', "SEED = 7", text, count=1, flags=re.M)
    assert n1 == n2 == n3 == 1, "augment.py lost its FOLDER/LIMIT/SEED globals"
    edited = tmp_path / "augment_edited.py"
    edited.write_text(text)
    result = _run([str(edited), "--no-progress"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(_augmented(folder)) == 2


def test_no_overwrite_and_no_augmenting_augmented(tmp_path: Path) -> None:
    from meshfer.augment import augment_folder

    folder = _folder(tmp_path, 3)
    first = sorted(folder.iterdir())[0]
    existing = folder / f"augmented_{first.name}"
    shutil.copy2(first, existing)
    before = existing.read_bytes()
    messages: list[str] = []
    stats = augment_folder(folder, None, seed=0, progress=False, log=messages.append)
    assert existing.read_bytes() == before  # never overwritten
    assert stats.n_sources == 3  # the augmented file is not a source
    assert len(stats.written) == 2 and stats.already_there == [existing]  # the copy already there counts
    assert not any(p.name.startswith(("augmented_augmented", "augmented2_augmented")) for p in folder.iterdir())
    # A second run writes nothing: the folder already holds the copies asked for.
    snapshot = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = augment_folder(folder, None, seed=0, progress=False, log=messages.append)
    assert again.written == [] and len(again.already_there) == 3
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == snapshot
    # Asking for more copies adds second copies under new names and still never touches the old ones.
    more = augment_folder(folder, 5, seed=0, progress=False, log=messages.append)
    assert len(more.written) == 2 and all(p.name.startswith("augmented2_") for p in more.written)
    assert all((folder / name).read_bytes() == data for name, data in snapshot.items())
    assert messages == []


def test_seed_reproducible(tmp_path: Path) -> None:
    from meshfer.augment import augment_folder

    a = _folder(tmp_path / "a", 3)
    b = _folder(tmp_path / "b", 3)
    c = _folder(tmp_path / "c", 3)
    augment_folder(a, 4, seed=3, progress=False)
    augment_folder(b, 4, seed=3, progress=False)
    augment_folder(c, 4, seed=4, progress=False)
    names = _augmented(a)
    assert names == _augmented(b) == _augmented(c)
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert any((a / n).read_bytes() != (c / n).read_bytes() for n in names)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = _run([str(SCRIPT), str(tmp_path / "nope"), "--no-progress"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"augment.py: error: {tmp_path / 'nope'}: no such folder"


def test_augmented_tree_leaves_source_alone_and_is_idempotent(tmp_path: Path) -> None:
    from meshfer.augment import augmented_tree
    from meshfer.datasets import scan_dataset

    source = tmp_path / "source"
    _folder(source, 2, label="sad")
    _folder(source, 2, label="happy")
    listing = sorted(p.relative_to(source) for p in source.rglob("*"))
    dataset = scan_dataset(source)
    stats = augmented_tree(dataset, tmp_path / "aug", None, seed=0, progress=False)
    assert {k: len(s.written) for k, s in stats.items()} == {"happy": 2, "sad": 2}
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == listing
    again = augmented_tree(dataset, tmp_path / "aug", None, seed=0, progress=False)
    assert all(not s.written for s in again.values())
    augmented = scan_dataset(tmp_path / "aug")
    assert len(augmented) == 8
    # Groups of the copies match their sources' groups in the original data set.
    assert {r.group for r in augmented.records} == {r.group for r in dataset.records}


def test_group_split_keeps_copies_with_their_source(tmp_path: Path) -> None:
    from meshfer.augment import augment_folder
    from meshfer.datasets import group_split, scan_dataset

    root = tmp_path / "data"
    for k, label in enumerate(("sad", "happy", "angry")):
        augment_folder(_folder(root, 6, label=label), 12, seed=k, progress=False)
    dataset = scan_dataset(root)
    assert len(dataset) == 3 * (6 + 12)
    groups = np.array([r.group for r in dataset.records])
    labels = np.array([r.label for r in dataset.records])
    for seed in range(5):
        train, test = group_split(groups, 0.3, seed=seed, stratify=labels)
        assert len(test) and len(train) and len(train) + len(test) == len(dataset)
        assert not set(groups[train]) & set(groups[test])
        for i in test:  # every copy on the test side has its source there too, and vice versa
            source = Path(dataset.records[i].path).parent / re.sub(r"^augmented\d*_", "", dataset.records[i].path.name)
            assert source in {dataset.records[j].path for j in test}


@pytest.mark.parametrize("mirror", [False, True])
def test_mirrored_training_rows_share_their_source_group(mirror: bool) -> None:
    from meshfer.meshtable import MeshTable
    from meshfer.training.expression import prepare

    rng = np.random.default_rng(0)
    lm = rng.uniform(0.3, 0.7, size=(4, 478, 3)).astype(np.float32)
    table = MeshTable.from_rows([
        {"path": f"face_sad/{i}.jpg", "label": "sad", "group": f"face_sad/{i}.jpg", "status": "ok"} for i in range(4)
    ])
    table = replace(table, landmarks=lm, blendshapes=rng.uniform(size=(4, 52)).astype(np.float32),
                    image_sizes=np.full((4, 2), 48))
    data = prepare(table, "blendshapes_distances", mirror=mirror)
    assert len(data.x) == (8 if mirror else 4)
    if mirror:
        assert list(data.groups[:4]) == list(data.groups[4:])
        assert not np.allclose(data.x[:4], data.x[4:])
