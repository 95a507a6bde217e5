"""Labelled image folders: a data root holds ``<prefix><label>`` sub-folders of images.

Expressions use ``face_<label>`` (face_angry, face_happy, ...); the companion models use
``eye_<label>`` and ``mouth_<label>``. Labels come from the folder names, in sorted order.

Augmented copies written by ``augment.py`` are named ``augmented_<name>`` (then
``augmented2_<name>``, ``augmented3_<name>``, ...) beside their source. Every image carries a
*group*: the source image it derives from, so that a split keeps a source and its copies together.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import DatasetError
from .images import is_image_file

__all__ = [
    "EXPRESSION_PREFIX",
    "AUGMENTED_RE",
    "ImageRecord",
    "Problem",
    "Dataset",
    "scan_dataset",
    "scan_paths",
    "group_of",
    "is_augmented",
    "augmented_name",
    "group_split",
    "file_digest",
    "copies_of",
    "duplicate_groups",
]

EXPRESSION_PREFIX = "face_"
#: File-name prefix of augmented copies: ``augmented_`` or ``augmented<k>_`` (k >= 2).
AUGMENTED_RE = re.compile(r"^augmented(\d*)_")


@dataclass(frozen=True)
class ImageRecord:
    """One image file with its label ('' when unlabelled) and group (its source image)."""

    path: Path
    label: str
    group: str


@dataclass(frozen=True)
class Problem:
    """A file or folder that was skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Dataset:
    """The result of scanning a data root: images, labels in order, and what was skipped."""

    root: Path | None
    records: list[ImageRecord]
    labels: list[str]
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.records]

    def counts(self) -> dict[str, int]:
        """Number of images per label, in label order."""
        out = {label: 0 for label in self.labels}
        for r in self.records:
            out[r.label] = out.get(r.label, 0) + 1
        return out

    def limit(self, per_class: int | None, seed: int = 0) -> "Dataset":
        """A copy with at most ``per_class`` images per label (random but reproducible); None keeps all."""
        if per_class is None:
            return self
        rng = np.random.default_rng(seed)
        by_label: dict[str, list[ImageRecord]] = {}
        for r in self.records:
            by_label.setdefault(r.label, []).append(r)
        kept: list[ImageRecord] = []
        for label in self.labels:
            items = by_label.get(label, [])
            if len(items) > per_class:
                idx = np.sort(rng.choice(len(items), per_class, replace=False))
                items = [items[i] for i in idx]
            kept.extend(items)
        return Dataset(self.root, kept, list(self.labels), list(self.problems))


def is_augmented(path: str | Path) -> bool:
    """True for files written by augment.py (``augmented_<name>``, ``augmented2_<name>``, ...)."""
    return AUGMENTED_RE.match(Path(path).name) is not None


def augmented_name(source: str | Path, copy: int = 1) -> str:
    """File name of the ``copy``-th augmented copy of ``source`` (1 -> ``augmented_<name>``)."""
    name = Path(source).name
    return f"augmented_{name}" if copy <= 1 else f"augmented{copy}_{name}"


def group_of(path: str | Path, root: str | Path | None = None) -> str:
    """The group of an image: its source image's path (relative to ``root`` when given), with the
    augmented prefix removed, so ``face_sad/augmented2_x.jpg`` and ``face_sad/x.jpg`` share a group."""
    path = Path(path)
    name = AUGMENTED_RE.sub("", path.name, count=1)
    source = path.with_name(name)
    if root is not None:
        try:
            return source.relative_to(root).as_posix()
        except ValueError:
            pass
    return source.as_posix()


def scan_dataset(
    root: str | Path, prefix: str = EXPRESSION_PREFIX, *, labels: Sequence[str] | None = None
) -> Dataset:
    """Find the ``<prefix><label>`` folders under ``root`` and the image files in them.

    Non-image files, unreadable folders and empty class folders are recorded in
    ``Dataset.problems`` (and skipped). Raises DatasetError when ``root`` is missing or holds no
    class folder. ``labels`` restricts (and orders) the classes; a listed label without a folder is
    a problem, not an error.
    """
    root = Path(root).expanduser()
    kind = _kind_of(root)
    if kind != "dir":
        from .images import file_problem

        problem = file_problem(root) if kind is None else None
        if problem == "no such file":
            problem = "no such folder"
        elif problem is None or problem.startswith("not a regular file"):
            problem = "not a folder"
        raise DatasetError(f"{root}: {problem}")
    folders = {
        p.name[len(prefix):]: p for p in sorted(root.iterdir()) if p.is_dir() and p.name.startswith(prefix)
    }
    if not folders:
        raise DatasetError(f"{root}: no '{prefix}<label>' folders found (expected e.g. {prefix}happy/)")
    wanted = list(labels) if labels is not None else sorted(folders)
    problems: list[Problem] = []
    records: list[ImageRecord] = []
    for label in wanted:
        folder = folders.get(label)
        if folder is None:
            problems.append(Problem(str(root / f"{prefix}{label}"), "class folder missing"))
            continue
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            problems.append(Problem(str(folder), f"cannot list folder ({exc.strerror or exc})"))
            continue
        n_before = len(records)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                problems.append(Problem(str(entry), "sub-folder ignored"))
            elif not is_image_file(entry):
                problems.append(Problem(str(entry), "not an image file (extension)"))
            else:
                records.append(ImageRecord(entry, label, group_of(entry, root)))
        if len(records) == n_before:
            problems.append(Problem(str(folder), "empty class folder (no images)"))
    return Dataset(root, records, wanted, problems)


def _kind_of(path: Path) -> str | None:
    """'dir', 'file' (regular files and links to them) or None (anything else, and paths that cannot
    be looked at: missing, a name over the system's limit, a link loop, no permission)."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else None


def scan_paths(inputs: Iterable[str | Path]) -> Dataset:
    """Unlabelled images from files and folders (folders expand to their images, recursively).

    Missing paths, and the entries of a folder that are not read (files without an image
    extension, links that lead nowhere, FIFOs and devices), are recorded as problems, each with
    its reason; hidden files are left out silently.
    """
    from .images import file_problem

    records: list[ImageRecord] = []
    problems: list[Problem] = []
    for item in inputs:
        p = Path(item).expanduser()
        kind = _kind_of(p)
        if kind == "dir":
            images = []
            try:
                entries = sorted(p.rglob("*"))
            except OSError as exc:
                problems.append(Problem(str(p), f"cannot list folder ({exc.strerror or exc})"))
                continue
            for q in entries:
                rel = q.relative_to(p).parts
                if q.name.startswith(".") or _kind_of(q) == "dir":
                    continue
                if is_image_file(q) and _kind_of(q) == "file":
                    images.append(q)
                elif not any(part.startswith(".") for part in rel):
                    reason = file_problem(q) if is_image_file(q) else None
                    problems.append(Problem(str(q), reason or "not an image file (extension)"))
            if not images:
                problems.append(Problem(str(p), "folder holds no images"))
            records.extend(ImageRecord(q, "", group_of(q)) for q in images)
        elif kind == "file":
            records.append(ImageRecord(p, "", group_of(p)))
        else:  # missing, too long a name, a link loop, a FIFO, ...: the reason, and on with the rest
            reason = file_problem(p)
            problems.append(Problem(str(p), "no such file or folder" if reason in (None, "no such file") else reason))
    return Dataset(None, records, [], problems)


def group_split(
    groups: Sequence[str] | np.ndarray,
    test_size: float = 0.1,
    *,
    seed: int = 0,
    stratify: Sequence[str] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) such that no group has members on both sides.

    With ``stratify`` (one label per item) the split is made per label, so class shares stay
    close to the whole set's. Deterministic for a given seed.
    """
    groups = np.asarray(groups)
    n = len(groups)
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    if stratify is None:
        strata = np.zeros(len(uniq), dtype=int)
    else:
        labels = np.asarray(stratify)
        # A group's stratum is the label of its first member.
        first = np.full(len(uniq), -1)
        for i in range(n - 1, -1, -1):
            first[inverse[i]] = i
        _, strata = np.unique(labels[first], return_inverse=True)
    test_groups = np.zeros(len(uniq), dtype=bool)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        k = int(round(len(members) * test_size))
        if k:
            test_groups[rng.choice(members, k, replace=False)] = True
    is_test = test_groups[inverse]
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes (to find the same image saved twice); '' when it cannot be read."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def copies_of(paths: Iterable[str | Path], reference: Dataset | Iterable[str | Path]) -> np.ndarray:
    """Boolean mask over ``paths``: True where the file is byte-identical to an image of
    ``reference`` (a :class:`Dataset` or paths), such as a validation image that is also in the
    training folder (FER-2013 has 280 of them). Evaluating without them keeps every test image out
    of training."""
    ref_paths = reference.paths if isinstance(reference, Dataset) else list(reference)
    by_size: dict[int, list[Path]] = {}
    for r in map(Path, ref_paths):
        try:
            by_size.setdefault(r.stat().st_size, []).append(r)
        except OSError:
            continue
    digests: dict[int, set[str]] = {}  # only files of a size found in ``paths`` are hashed
    out = []
    for p in map(Path, paths):
        try:
            size = p.stat().st_size
        except OSError:
            out.append(False)
            continue
        if size not in by_size:
            out.append(False)
            continue
        if size not in digests:
            digests[size] = {file_digest(r) for r in by_size[size]} - {""}
        out.append(file_digest(p) in digests[size])
    return np.asarray(out, dtype=bool)


def duplicate_groups(paths: Sequence[str | Path], groups: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """Group ids (ints) over ``paths`` that join byte-identical files, and files that share one of
    ``groups`` (an image and its augmented copies): a split by these ids never puts the same picture
    on both sides, even when a data set holds it twice under two names."""
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    keys = [("digest", file_digest(p)) for p in paths]
    if groups is not None:
        keys += [("group", str(g)) for g in groups]
    for k, key in enumerate(keys):
        i = k % len(paths)
        if key[1] == "":
            continue
        j = first.setdefault(key, i)
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    roots = np.array([find(i) for i in range(len(paths))], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1]
