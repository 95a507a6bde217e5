"""Scanning face_<label> folders, groups of augmented copies, and group-safe splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from meshfer.datasets import (
    augmented_name, copies_of, group_of, group_split, is_augmented, scan_dataset, scan_paths,
)
from meshfer.errors import DatasetError


def test_scan_reports_non_images_and_empty_folders(small_dataset: Path) -> None:
    (small_dataset / "face_happy" / "notes.txt").write_text("not an image")
    (small_dataset / "face_happy" / ".DS_Store").write_bytes(b"\0")
    (small_dataset / "face_calm").mkdir()
    (small_dataset / "README.md").write_text("ignored: not a class folder")
    ds = scan_dataset(small_dataset)
    assert ds.labels == ["angry", "calm", "disgusted", "fear", "happy", "neutral", "sad", "surprised"]
    assert len(ds) == 21 and ds.counts()["calm"] == 0
    reasons = {Path(p.path).name: p.reason for p in ds.problems}
    assert reasons == {"notes.txt": "not an image file (extension)", "face_calm": "empty class folder (no images)"}


def test_missing_and_unusable_roots(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such folder"):
        scan_dataset(tmp_path / "absent")
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="face_<label>"):
        scan_dataset(tmp_path / "images")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a folder"):
        scan_dataset(tmp_path / "file.jpg")


def test_labels_can_be_chosen_and_missing_ones_reported(small_dataset: Path) -> None:
    ds = scan_dataset(small_dataset, labels=["happy", "bored"])
    assert ds.labels == ["happy", "bored"] and len(ds) == 3
    assert [Path(p.path).name for p in ds.problems] == ["face_bored"]


def test_augmented_copies_share_their_source_group() -> None:
    assert augmented_name("face_sad/x.jpg") == "augmented_x.jpg"
    assert augmented_name("x.jpg", 3) == "augmented3_x.jpg"
    root = Path("/data")
    src = root / "face_sad" / "x.jpg"
    copies = [root / "face_sad" / augmented_name(src, k) for k in (1, 2, 3)]
    assert all(is_augmented(c) for c in copies) and not is_augmented(src)
    assert {group_of(p, root) for p in [src, *copies]} == {"face_sad/x.jpg"}
    # a source whose own name starts with digits and an underscore is not mistaken for a copy
    assert group_of(root / "face_sad" / "augmented_3_x.jpg", root) == "face_sad/3_x.jpg"


def test_group_split_keeps_groups_together_and_is_stratified() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{i}" for i in range(300)], rng.integers(1, 4, 300))
    labels = np.array([f"c{int(g[1:]) % 3}" for g in groups])
    train, test = group_split(groups, 0.2, seed=1, stratify=labels)
    assert len(train) + len(test) == len(groups) and not set(train) & set(test)
    assert not set(groups[train]) & set(groups[test])
    for c in ("c0", "c1", "c2"):
        share = len(set(groups[test][labels[test] == c])) / len(set(groups[labels == c]))
        assert 0.15 < share < 0.25
    again = group_split(groups, 0.2, seed=1, stratify=labels)
    assert np.array_equal(again[1], test)


def test_limit_is_reproducible(small_dataset: Path) -> None:
    ds = scan_dataset(small_dataset)
    a, b = ds.limit(2, seed=5), ds.limit(2, seed=5)
    assert [r.path for r in a.records] == [r.path for r in b.records]
    assert set(a.counts().values()) == {2}


def test_scan_paths_expands_folders_and_reports_missing(small_dataset: Path, tmp_path: Path) -> None:
    one = next((small_dataset / "face_sad").iterdir())
    ds = scan_paths([one, small_dataset / "face_happy", tmp_path / "nope.jpg"])
    assert len(ds) == 4
    assert [p.reason for p in ds.problems] == ["no such file or folder"]


def test_copies_of_finds_byte_identical_images_only(small_dataset: Path, tmp_path: Path) -> None:
    import shutil

    import cv2

    reference = tmp_path / "reference"
    reference.mkdir()
    images = scan_dataset(small_dataset).paths
    same, recoded = images[0], images[1]
    shutil.copy2(same, reference / "renamed.jpg")  # same bytes, another name
    cv2.imwrite(str(reference / "recoded.png"), cv2.imread(str(recoded)))  # same pixels, other bytes
    (reference / "notes.txt").write_text("not an image")
    mask = copies_of(images, scan_paths([reference]))
    assert mask.tolist() == [True] + [False] * (len(images) - 1)
    assert not copies_of(images, []).any()
    assert copies_of([tmp_path / "missing.jpg"], scan_paths([reference])).tolist() == [False]
