"""Folds of labelled photos grouped by identity: no person, and no copy or near-copy of a photo, on
both sides of a split.

A photo's identity is its file name without the trailing ``_<number>`` (``Dwarakish_105.jpg`` ->
``Dwarakish``, ``Alexander_Lukashenko_0001.jpg`` -> ``Alexander_Lukashenko``), the naming of the
``facial_expressions`` set. Photos that are byte-identical, or whose small grey thumbnails
correlate almost perfectly (:func:`thumbnail`), are joined into one group whatever their names say,
so that a picture saved twice under two names stays on one side too. The folds are stratified by
label (scikit-learn's ``StratifiedGroupKFold``) and depend only on the file names, their bytes and
the seed: the same on every run and every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["identity_of", "thumbnail", "identity_groups", "PhotoFolds", "make_folds", "NEAR_COPY_CORRELATION"]

#: Thumbnail correlation (see :func:`thumbnail`) from which two photos count as copies of one shot.
NEAR_COPY_CORRELATION = 0.97

_TRAILING_NUMBER = re.compile(r"_\d+$")


def identity_of(path: str | Path) -> str:
    """The person of a photo: the file name without extension and trailing ``_<number>``."""
    stem = Path(str(path)).stem
    return _TRAILING_NUMBER.sub("", stem) or stem


def thumbnail(path: str | Path, size: int = 32) -> np.ndarray | None:
    """A photo as a unit vector: grey, shrunk to ``size`` x ``size``, mean removed. Two pictures of
    one shot (re-encoded, resized, brightened, lightly cropped) have thumbnails with a correlation
    (dot product) near 1; different photos of aligned faces stay below ~0.91 in muxspace-dev. None
    when the file cannot be read."""
    import cv2

    from .errors import MeshferError
    from .images import read_image

    try:
        image = read_image(path)
    except (MeshferError, OSError, ValueError):
        return None
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    t = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    t -= t.mean()
    return t / max(float(np.linalg.norm(t)), 1e-9)


def identity_groups(paths: Sequence[str | Path], near_copy: float = NEAR_COPY_CORRELATION) -> np.ndarray:
    """Group ids (0, 1, ...) over ``paths`` joining photos of one identity, byte-identical files and
    near-copies (thumbnail correlation at least ``near_copy``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .datasets import duplicate_groups

    paths = [Path(str(p)) for p in paths]
    if not paths:
        return np.zeros(0, dtype=np.int64)
    ids = duplicate_groups(paths, [identity_of(p) for p in paths])  # identity and byte-identical copies
    # one edge from each photo to the first photo of its group, one between each pair of near-copies
    first = np.unique(ids, return_index=True)[1][ids]
    edges = [np.stack([np.arange(len(paths)), first], axis=1)]
    thumbs = [thumbnail(p) for p in paths]
    known = np.array([i for i, t in enumerate(thumbs) if t is not None], dtype=np.int64)
    if len(known):
        t = np.array([thumbs[i] for i in known])
        edges.append(known[np.argwhere(np.triu(t @ t.T >= near_copy, 1))])
    pairs = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(paths), len(paths)))
    return connected_components(graph, directed=False)[1].astype(np.int64)


@dataclass(frozen=True)
class PhotoFolds:
    """``n_folds`` folds over photos: ``fold[i]`` is the fold whose model must not see photo ``i``
    (its out-of-fold model), ``groups[i]`` its identity group; ``names`` are the photos' paths
    relative to the data folder (``face_sad/x_1.jpg``), which is what a card records."""

    names: tuple[str, ...]
    labels: tuple[str, ...]
    identities: tuple[str, ...]
    groups: np.ndarray
    fold: np.ndarray
    n_folds: int
    seed: int
    near_copy: float = NEAR_COPY_CORRELATION

    def train_rows(self, k: int) -> np.ndarray:
        """The photos a fold-``k`` model trains on (every other fold)."""
        return np.flatnonzero(self.fold != k)

    def test_rows(self, k: int) -> np.ndarray:
        """The photos fold ``k``'s model is scored on."""
        return np.flatnonzero(self.fold == k)

    def rows_of(self, names: Sequence[str]) -> np.ndarray:
        """Row of each name (``face_x/file.jpg``); -1 where the folds hold no such photo."""
        index = {n: i for i, n in enumerate(self.names)}
        return np.array([index.get(str(n), -1) for n in names], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """What a model card records: the rule, and each fold's identities and photos."""
        folds = []
        for k in range(self.n_folds):
            rows = self.test_rows(k)
            folds.append({"identities": sorted({self.identities[i] for i in rows}),
                          "photos": [self.names[i] for i in rows],
                          "counts": {lab: int(sum(self.labels[i] == lab for i in rows)) for lab in sorted(set(self.labels))}})
        return {"n_folds": self.n_folds, "seed": self.seed, "near_copy_correlation": self.near_copy,
                "grouping": "identity (file name without its trailing _<number>), byte-identical and near-copies "
                "(thumbnail correlation) in one group; StratifiedGroupKFold by label", "folds": folds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PhotoFolds":
        """The folds a card recorded (:meth:`to_dict`); groups are those of the recorded identities."""
        names, fold = [], []
        for k, f in enumerate(data["folds"]):
            names += list(f["photos"])
            fold += [k] * len(f["photos"])
        labels = tuple(Path(n).parent.name.removeprefix("face_") for n in names)
        identities = tuple(identity_of(n) for n in names)
        groups = np.unique(np.array(identities), return_inverse=True)[1]
        return cls(tuple(names), labels, identities, groups, np.asarray(fold, np.int64), int(data["n_folds"]),
                   int(data["seed"]), float(data.get("near_copy_correlation", NEAR_COPY_CORRELATION)))


def make_folds(root: str | Path, n_folds: int = 5, *, seed: int = 0, prefix: str = "face_",
               near_copy: float = NEAR_COPY_CORRELATION) -> PhotoFolds:
    """Identity-grouped, label-stratified folds of the photos in ``root``'s ``<prefix><label>``
    folders (every readable image file; the order of the names does not change the folds)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from .datasets import scan_dataset

    root = Path(root)
    dataset = scan_dataset(root, prefix)
    records = sorted(dataset.records, key=lambda r: Path(r.path).relative_to(root).as_posix())
    names = tuple(Path(r.path).relative_to(root).as_posix() for r in records)
    labels = tuple(str(r.label) for r in records)
    groups = identity_groups([r.path for r in records], near_copy)
    if len(np.unique(groups)) < n_folds:
        from .errors import DatasetError

        raise DatasetError(f"{root}: {len(np.unique(groups))} identities, too few for {n_folds} folds")
    fold = np.full(len(names), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(names)), labels, groups)):
        fold[test] = k
    return PhotoFolds(names, labels, tuple(identity_of(n) for n in names), groups, fold, n_folds, seed, near_copy)
