"""Where the data is: one place that resolves the data folders for the notebooks and the command line.

The training and validation folders come, in this order, from

1. values given explicitly: a notebook's parameters (``papermill NOTEBOOK OUT -p TRAIN_DIR ...``) or
   the arguments of :func:`resolve`;
2. the environment variables ``MESHFER_TRAIN_DIR`` and ``MESHFER_VAL_DIR``;
3. ``face_<label>`` folders at the repository root (the original quick start: the Kaggle data set
   extracted there);
4. ``data/fer2013/train`` and ``data/fer2013/validation`` under the repository root.

A training folder that comes without a validation folder - a single data root, as in 3. - is split by
:func:`fixed_split`: 10 % of each class to validation, stratified, with byte-identical pictures and
``augmented_`` copies kept on the side of their source (augmented copies of validation images are
used on neither side). The split depends only on the files, so it is the same in every run, every
notebook and ``meshfer train``/``evaluate``. :func:`split_view` writes it to a CSV and lays it out as
two folders of links to the images, which every notebook and recipe reads like any data root.

The repository is found from the working directory upwards (a notebook runs in its own folder), then
from this package's own location (an editable install); an installed package without a checkout uses
the working directory and its parent only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .datasets import (
    EXPRESSION_PREFIX, Dataset, ImageRecord, Problem, file_digest, group_of, is_augmented, scan_dataset,
)
from .errors import DatasetError, MeshferError, OutputError

__all__ = [
    "VAL_FRACTION",
    "SPLIT_SEED",
    "SPLIT_SIDES",
    "ENV",
    "repo_root",
    "project_root",
    "has_class_folders",
    "SplitRow",
    "FixedSplit",
    "fixed_split",
    "SplitView",
    "default_split_base",
    "split_view",
    "DataPaths",
    "resolve",
    "notebook_parameters",
    "label_folders_dir",
]

#: Share of each class that the fixed split puts on the validation side.
VAL_FRACTION = 0.1
#: Seed of the fixed split (it only decides which groups are drawn; the split depends on nothing else).
SPLIT_SEED = 0
#: Values of the ``split`` column: augmented copies of validation images are ``unused``.
SPLIT_SIDES = ("train", "validation", "unused")

#: Parameter name -> environment variable.
ENV = {
    "train_dir": "MESHFER_TRAIN_DIR",
    "val_dir": "MESHFER_VAL_DIR",
    "photos_dir": "MESHFER_PHOTOS_DIR",
    "photos_train_dir": "MESHFER_PHOTOS_TRAIN_DIR",
    "sample": "MESHFER_SAMPLE",
    "output_dir": "MESHFER_OUTPUT_DIR",
    "mesh_cache": "MESHFER_MESH_CACHE",
    "eye_dir": "MESHFER_EYE_DIR",
    "mouth_dir": "MESHFER_MOUTH_DIR",
    "handcheck_csv": "MESHFER_HANDCHECK",
    "augmented_dir": "MESHFER_AUGMENTED_DIR",
    "split_dir": "MESHFER_SPLIT_DIR",
}

#: Notebook parameter (global variable) -> field of :class:`DataPaths`.
NOTEBOOK_NAMES = {
    "TRAIN_DIR": "train_dir",
    "VAL_DIR": "val_dir",
    "PHOTOS_DIR": "photos_dir",
    "PHOTOS_TRAIN_DIR": "photos_train_dir",
    "SAMPLE": "sample",
    "OUTPUT_DIR": "output_dir",
    "MESH_CACHE": "mesh_cache",
    "EYE_DIR": "eye_dir",
    "MOUTH_DIR": "mouth_dir",
    "HANDCHECK_CSV": "handcheck_csv",
    "AUGMENTED_DIR": "augmented_dir",
}

#: Companion label folders of the original layout: kind -> (folder under the repository, prefix).
LABEL_FOLDERS = {"eyes": ("Eye Closeness", "eye_"), "mouth": ("Mouth Closeness", "mouth_")}

_MARKER = ".meshfer-split.json"


# ------------------------------------------------------------------------------------------------
# The repository


def _is_repo(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    if not (pyproject.is_file() and (folder / "meshfer" / "__init__.py").is_file()):
        return False
    try:
        return 'name = "meshfer"' in pyproject.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def repo_root(start: str | Path | None = None, *, package: bool = True) -> Path | None:
    """The meshfer checkout that holds ``start`` (default: the working directory), searched
    upwards; else, with ``package``, the checkout this package runs from (an editable install);
    else None (an installed package: no repository is assumed)."""
    here = Path(start if start is not None else os.getcwd()).expanduser().absolute()
    for folder in (here, *here.parents):
        if _is_repo(folder):
            return folder
    if package:
        own = Path(__file__).resolve().parent.parent
        if _is_repo(own):
            return own
    return None


def has_class_folders(folder: str | Path, prefix: str = EXPRESSION_PREFIX) -> bool:
    """True when ``folder`` holds at least one ``<prefix><label>`` sub-folder."""
    try:
        return any(c.is_dir() and c.name.startswith(prefix) for c in Path(folder).iterdir())
    except OSError:
        return False


def project_root(start: str | Path | None = None, *, package: bool = True) -> Path:
    """The folder the default data paths are relative to: the repository (see :func:`repo_root`);
    without one, the first of the working directory and its parent (a notebook's folder and the
    folder above it) that holds ``face_*`` folders or ``data/fer2013/train``; else the working
    directory."""
    repo = repo_root(start, package=package)
    if repo is not None:
        return repo
    here = Path(start if start is not None else os.getcwd()).expanduser().absolute()
    for folder in (here, here.parent):
        if has_class_folders(folder) or (folder / "data" / "fer2013" / "train").is_dir():
            return folder
    return here


def label_folders_dir(kind: str, root: str | Path | None = None) -> Path | None:
    """``<root>/Eye Closeness`` (kind 'eyes') or ``<root>/Mouth Closeness`` ('mouth') when it holds
    ``eye_<label>``/``mouth_<label>`` folders (the original layout), else None; ``root`` defaults
    to :func:`project_root`."""
    name, prefix = LABEL_FOLDERS[kind]
    folder = Path(root if root is not None else project_root()) / name
    return folder if has_class_folders(folder, prefix) else None


# ------------------------------------------------------------------------------------------------
# The fixed split of a single data root


@dataclass(frozen=True)
class SplitRow:
    """One image of a split data root: its path relative to the root, label, group (the image that
    decides its side: the first of the pictures it is byte-identical to or an augmented copy of) and side."""

    path: str
    label: str
    group: str
    split: str


@dataclass(frozen=True)
class FixedSplit:
    """The fixed split of a data root (see :func:`fixed_split`); ``rows`` sorted by path."""

    root: Path
    prefix: str
    labels: tuple[str, ...]
    rows: tuple[SplitRow, ...]
    val_fraction: float = VAL_FRACTION
    seed: int = SPLIT_SEED
    problems: tuple[Problem, ...] = ()

    def side(self, name: str) -> list[SplitRow]:
        """The rows of one side ('train', 'validation' or 'unused')."""
        if name not in SPLIT_SIDES:
            raise ValueError(f"no split side {name!r}; valid: {', '.join(SPLIT_SIDES)}")
        return [r for r in self.rows if r.split == name]

    def counts(self) -> dict[str, int]:
        """Images per side."""
        return {name: sum(1 for r in self.rows if r.split == name) for name in SPLIT_SIDES}

    def dataset(self, name: str) -> Dataset:
        """The images of one side as a :class:`~meshfer.datasets.Dataset` of the root's own files
        (what ``meshfer evaluate/extract --split`` read)."""
        paths = [(self.root / r.path, r.label) for r in self.side(name)]
        records = [ImageRecord(path, label, group_of(path, self.root)) for path, label in paths]
        return Dataset(self.root, records, list(self.labels), list(self.problems))

    def csv_text(self) -> str:
        """The split as CSV: ``path,label,group,split``, one row per image (paths relative to the root)."""
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label", "group", "split"])
        for r in self.rows:
            writer.writerow([r.path, r.label, r.group, r.split])
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        """Write :meth:`csv_text` to ``path`` (atomically; a file with the same content is left alone)."""
        return _write_text(Path(path), self.csv_text())


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _units(paths: list[Path], groups: list[str]) -> list[int]:
    """A unit id per file: files of one group (a source and its augmented copies) and
    byte-identical files (only files whose size another file shares are read) share one."""
    union = _Union(len(paths))
    first_of_group: dict[str, int] = {}
    by_size: dict[int, list[int]] = {}
    for i, (p, g) in enumerate(zip(paths, groups)):
        union.join(i, first_of_group.setdefault(g, i))
        try:
            by_size.setdefault(p.stat().st_size, []).append(i)
        except OSError:
            continue
    for members in by_size.values():
        if len(members) < 2:
            continue
        first_of_digest: dict[str, int] = {}
        for i in members:
            digest = file_digest(paths[i])
            if digest:
                union.join(i, first_of_digest.setdefault(digest, i))
    return [union.find(i) for i in range(len(paths))]


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode("utf-8", "surrogateescape")).hexdigest()


def fixed_split(
    root: str | Path, *, prefix: str = EXPRESSION_PREFIX, val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED
) -> FixedSplit:
    """Split the ``<prefix><label>`` folders of ``root`` into training and validation.

    Images that are byte-identical, and an image with its ``augmented_`` copies, form one unit
    that goes to one side as a whole. Per class (the label of a unit's first image), the
    ``round(val_fraction * n)`` units (at least one when the class has two or more) that rank
    first by a hash of their first image's name and ``seed`` go to validation; augmented copies
    there are marked 'unused'. Nothing random and nothing but the files' names and bytes is
    involved, so every call on the same files gives the same split. Raises DatasetError when
    ``root`` holds no class folder.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    dataset = scan_dataset(root, prefix)
    base = dataset.root if dataset.root is not None else Path(root)
    records = dataset.records
    rel = [r.path.relative_to(base).as_posix() for r in records]
    groups = [r.group for r in records]
    units = _units([r.path for r in records], groups)
    members: dict[int, list[int]] = {}
    for i, u in enumerate(units):
        members.setdefault(u, []).append(i)
    # A unit's key and class: its first member by group name (the source of augmented copies), then path.
    key_of: dict[int, str] = {}
    label_of: dict[int, str] = {}
    for u, idx in members.items():
        first = min(idx, key=lambda i: (groups[i], rel[i]))
        key_of[u], label_of[u] = groups[first], records[first].label
    validation: set[int] = set()
    for label in dataset.labels:
        in_class = [u for u in members if label_of[u] == label]
        in_class.sort(key=lambda u: (_rank(seed, key_of[u]), key_of[u]))
        n = len(in_class)
        k = 0 if n < 2 else max(1, int(n * val_fraction + 0.5))
        validation.update(in_class[:k])
    rows = []
    for i, r in enumerate(records):
        u = units[i]
        side = "train" if u not in validation else ("unused" if is_augmented(r.path) else "validation")
        rows.append(SplitRow(rel[i], r.label, key_of[u], side))
    rows.sort(key=lambda row: row.path)
    return FixedSplit(base, prefix, tuple(dataset.labels), tuple(rows), val_fraction, seed, tuple(dataset.problems))


# ------------------------------------------------------------------------------------------------
# The split as folders of links


@dataclass(frozen=True)
class SplitView:
    """A fixed split laid out on disk: ``train_dir`` and ``val_dir`` hold ``<prefix><label>``
    folders of links to the root's images; ``csv_path`` lists every image with its side."""

    split: FixedSplit
    train_dir: Path
    val_dir: Path
    csv_path: Path


def default_split_base(start: str | Path | None = None, *, package: bool = True) -> Path:
    """Where split views are laid out: ``$MESHFER_SPLIT_DIR``; else ``output/split`` in the
    repository (see :func:`repo_root`); else ``split`` in the user cache folder (``~/.cache/meshfer``)."""
    override = os.environ.get(ENV["split_dir"])
    if override:
        return Path(override).expanduser().absolute()
    repo = repo_root(start, package=package)
    if repo is not None:
        return repo / "output" / "split"
    from .assets import cache_dir

    return cache_dir().absolute() / "split"


def _write_text(path: Path, text: str) -> Path:
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the split ({exc.strerror or exc})") from None
    return path


def _link_text(link: Path, target: Path) -> str:
    try:
        return os.path.relpath(target, link.parent)
    except ValueError:  # another drive (Windows)
        return str(target)


def _same(entry: Path, target: Path, text: str) -> bool:
    """True when ``entry`` (in a view) stands for ``target``: a link with that text, or the same
    file (a hard link) or a copy of it (same size and modification time)."""
    try:
        if entry.is_symlink():
            return os.readlink(entry) == text
        a, b = entry.stat(), target.stat()
        return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev) or (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)
    except OSError:
        return False


def _place(entry: Path, target: Path, text: str) -> None:
    """A symbolic link at ``entry`` to ``target``; a hard link, then a copy, where links are impossible."""
    try:
        os.symlink(text, entry)
        return
    except FileExistsError:
        if _same(entry, target, text):
            return  # made meanwhile by another run
        entry.unlink()
        os.symlink(text, entry)
        return
    except OSError:
        pass
    try:
        os.link(target, entry)
    except OSError:
        shutil.copy2(target, entry)


def _sync_side(folder: Path, split: FixedSplit, rows: list[SplitRow], side: str) -> None:
    """Make ``folder`` hold exactly one entry per row (links to the root's images), and nothing else."""
    marker = folder / _MARKER
    info = {"root": str(split.root), "prefix": split.prefix, "side": side, "val_fraction": split.val_fraction,
            "seed": split.seed}
    if folder.exists():
        if not folder.is_dir():
            raise OutputError(f"{folder}: exists and is not a folder (it is where the split of {split.root} goes)")
        if not marker.is_file() and any(True for _ in folder.iterdir()):
            raise OutputError(
                f"{folder}: exists and was not made by meshfer; move it away, or set {ENV['split_dir']} "
                "to another folder"
            )
    wanted: dict[str, dict[str, Path]] = {f"{split.prefix}{label}": {} for label in split.labels}
    for r in rows:
        target = split.root / r.path
        wanted.setdefault(Path(r.path).parent.name, {})[target.name] = target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for sub in folder.iterdir():  # class folders that are no longer wanted
            if sub.name not in wanted and sub.is_dir() and not sub.is_symlink() and sub.name.startswith(split.prefix):
                for entry in sub.iterdir():
                    if entry.is_symlink() or entry.is_file():
                        entry.unlink()
                sub.rmdir()
        for name, entries in wanted.items():
            sub = folder / name
            sub.mkdir(exist_ok=True)
            for entry in sub.iterdir():
                target = entries.get(entry.name)
                if target is None or not _same(entry, target, _link_text(entry, target)):
                    if entry.is_symlink() or entry.is_file():
                        entry.unlink()
            for file_name, target in entries.items():
                entry = sub / file_name
                text = _link_text(entry, target)
                if not (os.path.lexists(entry) and _same(entry, target, text)):
                    _place(entry, target, text)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot lay out the split of {split.root} ({exc.strerror or exc})") from None
    _write_text(marker, json.dumps(info, indent=1) + "\n")


def split_view(split: FixedSplit, base: str | Path | None = None) -> SplitView:
    """Lay ``split`` out under ``base`` (default :func:`default_split_base`): ``<name>-train/``
    and ``<name>-validation/`` (``<name>``: the root's folder name) of links to the images, and
    ``<name>-split.csv``. Re-running brings the folders up to date (new images linked, removed ones
    unlinked) and leaves an unchanged CSV untouched; the images themselves are never touched."""
    base = Path(base).expanduser().absolute() if base is not None else default_split_base()
    root = split.root.absolute()
    name = root.name or "data"
    train_dir, val_dir = base / f"{name}-train", base / f"{name}-validation"
    for folder in (train_dir, val_dir):
        if folder == root or (root in folder.parents and folder.relative_to(root).parts[0].startswith(split.prefix)):
            raise OutputError(f"{folder}: the split of {root} cannot go inside its own class folders")
    split = replace(split, root=root)
    _sync_side(train_dir, split, split.side("train"), "train")
    _sync_side(val_dir, split, split.side("validation"), "validation")
    csv_path = split.write_csv(base / f"{name}-split.csv")
    return SplitView(split, train_dir, val_dir, csv_path)


# ------------------------------------------------------------------------------------------------
# Resolution


@dataclass
class DataPaths:
    """The resolved data folders and settings of a notebook (see :func:`resolve`). ``source``
    says where the training and validation folders came from; ``view`` is the split view when a
    single data root was split. Displayed in a notebook, it shows every value (:meth:`summary`)."""

    train_dir: Path
    val_dir: Path
    photos_dir: Path
    sample: int | None
    output_dir: Path
    mesh_cache: Path
    eye_dir: Path
    mouth_dir: Path
    handcheck_csv: Path
    augmented_dir: Path
    source: str = ""
    repo: Path | None = None
    view: SplitView | None = None
    origins: dict[str, str] = field(default_factory=dict)  # field -> where its value came from
    shown: tuple[str, ...] = tuple(NOTEBOOK_NAMES)  # the notebook parameters to show
    photos_train_dir: Path | None = None  # ordinary photos to train on (the hybrid model), if any

    def summary(self) -> str:
        """What :func:`notebook_parameters` shows: the data source, the split, every parameter."""
        lines = [f"data: {self.source}"]
        if self.view is not None:
            c = self.view.split.counts()
            unused = f", {c['unused']:,} augmented copies of validation images unused" if c["unused"] else ""
            split = self.view.split
            lines.append(f"  fixed split ({split.val_fraction:.0%} of each class to validation, seed {split.seed}): "
                         f"train {c['train']:,}, validation {c['validation']:,} images{unused}")
            lines.append(f"  split CSV: {self.view.csv_path}")
        width = max(len(n) for n in self.shown) if self.shown else 0
        for name in self.shown:
            key = NOTEBOOK_NAMES[name]
            value = getattr(self, key)
            notes = [self.origins[key]] if key in self.origins else []
            if key in ("eye_dir", "mouth_dir") and not value.exists():
                notes.append("missing: built when needed")
            elif key in ("photos_dir", "photos_train_dir", "handcheck_csv") and not value.exists():
                notes.append("missing: skipped")
            elif key == "sample" and value is None:
                notes.append("all images")
            lines.append(f"{name:<{width}} = {value}" + (f"  ({'; '.join(notes)})" if notes else ""))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython / Jupyter display
        printer.text(self.summary())


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and value.strip() == "")


def _path(value: Any) -> Path:
    return Path(str(value)).expanduser().absolute()


def _sample(value: Any, origin: str) -> int | None:
    if value is None:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        raise MeshferError(f"{origin}: SAMPLE must be a whole number of images per class, got {value!r}") from None
    if n < 1:
        raise MeshferError(f"{origin}: SAMPLE must be at least 1, got {n}")
    return n


def _check_dir(path: Path, what: str, origin: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{path}: no such folder ({what}, from {origin})")
    return path


def resolve(
    *,
    train_dir: str | Path | None = None,
    val_dir: str | Path | None = None,
    photos_dir: str | Path | None = None,
    photos_train_dir: str | Path | None = None,
    sample: int | str | None = None,
    output_dir: str | Path | None = None,
    mesh_cache: str | Path | None = None,
    eye_dir: str | Path | None = None,
    mouth_dir: str | Path | None = None,
    handcheck_csv: str | Path | None = None,
    augmented_dir: str | Path | None = None,
    start: str | Path | None = None,
    split_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> DataPaths:
    """Resolve the data folders and settings; a value given here wins, then its environment
    variable (:data:`ENV`), then the defaults of the repository layout (see the module's doc).

    ``train_dir`` and ``val_dir`` come as a pair from one place; a training folder without a
    validation folder is split by :func:`fixed_split` and laid out by :func:`split_view` (under
    ``split_dir``, default :func:`default_split_base`). Other defaults: ``photos_dir``
    ``<repo>/data/photos``; ``photos_train_dir`` ``<repo>/data/photos-train``; ``output_dir`` ``./output``; ``mesh_cache`` ``<repo>/cache``;
    ``eye_dir``/``mouth_dir`` ``<repo>/Eye Closeness`` / ``<repo>/Mouth Closeness`` when they hold
    ``eye_*``/``mouth_*`` folders, else ``<output_dir>/eyes`` / ``<output_dir>/mouth`` (built by the
    notebooks with ``meshfer sort``); ``handcheck_csv`` ``<repo>/tests/data/handcheck_eyes_mouth.csv``;
    ``augmented_dir`` ``<output_dir>/train-augmented``. ``start`` is the folder to look for the
    repository from (default: the working directory). Raises DatasetError when no data is found.
    """
    env = os.environ if environ is None else environ
    here = Path(start if start is not None else os.getcwd()).expanduser().absolute()
    repo = repo_root(here)
    root = project_root(here)
    origins: dict[str, str] = {}

    def pick(key: str, value: Any, default: Any) -> Any:
        if _given(value):
            origins[key] = "given"
            return value
        if _given(env.get(ENV[key])):
            origins[key] = ENV[key]
            return env[ENV[key]]
        return default

    # Training and validation folders, as a pair from one place.
    view = None
    if _given(train_dir) or _given(val_dir):
        if not _given(train_dir):
            raise MeshferError("VAL_DIR is given without TRAIN_DIR: give both, or TRAIN_DIR alone to split it")
        t, v, what, origin = train_dir, val_dir, "TRAIN_DIR as given", "given"
    elif _given(env.get(ENV["train_dir"])) or _given(env.get(ENV["val_dir"])):
        if not _given(env.get(ENV["train_dir"])):
            raise MeshferError(
                f"{ENV['val_dir']} is set without {ENV['train_dir']}: set both, or {ENV['train_dir']} alone"
            )
        t, v, what, origin = env[ENV["train_dir"]], env.get(ENV["val_dir"]), ENV["train_dir"], "environment"
    elif has_class_folders(root):
        t, v, what, origin = root, None, "face_* folders at the repository root", "layout"
    elif (root / "data" / "fer2013" / "train").is_dir():
        t, v = root / "data" / "fer2013" / "train", root / "data" / "fer2013" / "validation"
        v = v if v.is_dir() else None
        what, origin = "data/fer2013 under the repository root", "layout"
    else:
        raise DatasetError(
            f"no data found: put the data set's face_<label> folders (face_angry, face_happy, ...) at the repository "
            f"root {root}, or FER-2013 as {root / 'data' / 'fer2013' / 'train'} and .../validation; or set "
            f"{ENV['train_dir']} (and {ENV['val_dir']}), or the notebook's TRAIN_DIR (and VAL_DIR) parameters"
        )
    train = _check_dir(_path(t), "training data", ENV["train_dir"] if origin == "environment" else what)
    if _given(v):
        val = _check_dir(_path(v), "validation data", ENV["val_dir"] if origin == "environment" else "VAL_DIR")
        source = {"given": "TRAIN_DIR and VAL_DIR as given", "environment": f"{ENV['train_dir']} and {ENV['val_dir']}",
                  "layout": f"data/fer2013/train and validation under {root}"}[origin]
        if origin == "environment":
            origins.update(train_dir=ENV["train_dir"], val_dir=ENV["val_dir"])
    else:
        chosen = pick("split_dir", split_dir, None)
        base = _path(chosen) if chosen is not None else default_split_base(here)
        view = split_view(fixed_split(train), base)
        train, val = view.train_dir, view.val_dir
        source = (f"{what} {root} (one data root, split)" if origin == "layout" and Path(t) == root
                  else f"{view.split.root} ({what}, without a validation folder: one data root, split)")
        origins.update(train_dir="links: the training side of the split", val_dir="links: the validation side")

    n = _sample(pick("sample", sample, None), "SAMPLE" if _given(sample) else ENV["sample"])
    out = _path(pick("output_dir", output_dir, here / "output"))
    photos = _path(pick("photos_dir", photos_dir, root / "data" / "photos"))
    photos_train = _path(pick("photos_train_dir", photos_train_dir, root / "data" / "photos-train"))
    cache = _path(pick("mesh_cache", mesh_cache, root / "cache"))
    eyes = _path(pick("eye_dir", eye_dir, label_folders_dir("eyes", root) or out / "eyes"))
    mouth = _path(pick("mouth_dir", mouth_dir, label_folders_dir("mouth", root) or out / "mouth"))
    for key, folder, prefix in (("eye_dir", eyes, "eye_"), ("mouth_dir", mouth, "mouth_")):
        if key not in origins and has_class_folders(folder, prefix):
            origins[key] = f"its {prefix}* folders"
    handcheck = _path(pick("handcheck_csv", handcheck_csv, root / "tests" / "data" / "handcheck_eyes_mouth.csv"))
    augmented = _path(pick("augmented_dir", augmented_dir, out / "train-augmented"))
    origins = {key: value for key, value in origins.items() if value != "given"}  # nothing to say about those
    return DataPaths(train, val, photos, n, out, cache, eyes, mouth, handcheck, augmented, source, repo, view, origins,
                     photos_train_dir=photos_train)


def notebook_parameters(namespace: MutableMapping[str, Any], *, start: str | Path | None = None) -> DataPaths:
    """Resolve a notebook's parameters in place: the names of :data:`NOTEBOOK_NAMES` that
    ``namespace`` (the notebook's ``globals()``) defines are replaced by their resolved values
    (:func:`resolve`; a value other than None is kept, as given). Returns the :class:`DataPaths`,
    which shows every parameter when it is the cell's last expression."""
    given = {key: namespace[name] for name, key in NOTEBOOK_NAMES.items() if name in namespace}
    paths = resolve(**given, start=start)
    shown = tuple(name for name in NOTEBOOK_NAMES if name in namespace)
    for name in shown:
        namespace[name] = getattr(paths, NOTEBOOK_NAMES[name])
    paths.shown = shown
    return paths
