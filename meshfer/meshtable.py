"""MeshTable: the face meshes of a batch of images, as NumPy arrays, saved as one .npz file.

One row per image, whatever happened to it: ``status`` is ``ok`` (a face was found),
``no_face`` or ``unreadable``; ``error`` says why. Failed rows hold NaN arrays. The file is a
plain ``.npz`` (no pickles) and loads with ``allow_pickle=False``.

A table bigger than :data:`SHARD_BYTES` (a million meshes are about 8 GB) is saved *sharded*: the
file named is then a small manifest ``.npz`` (format :data:`FORMAT_SHARDED`, the meta, the list of
parts) and the rows are in ``<name>.shards-<token>/part-NNNNN.npz`` beside it, each part a plain
table of at most about :data:`PART_BYTES`. :meth:`MeshTable.load` reads either kind. The parts are
written first and the manifest replaced last, in one rename, so an interrupted save leaves the
previous file (and its parts) as they were.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._io import atomic_write
from .errors import MeshferError
from .landmarks import BLENDSHAPE_NAMES, NUM_LANDMARKS, FaceMesh

__all__ = ["MeshTable", "STATUS_OK", "STATUS_NO_FACE", "STATUS_UNREADABLE", "FORMAT", "FORMAT_SHARDED",
           "SHARD_BYTES", "PART_BYTES"]

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_UNREADABLE = "unreadable"
#: Marker stored in every file so that meshfer never mistakes (and overwrites) a foreign .npz.
FORMAT = "meshfer.meshtable/1"
#: Marker of the manifest of a sharded table (the rows are in a folder of parts beside it).
FORMAT_SHARDED = "meshfer.meshtable-sharded/1"
#: Tables whose arrays take more bytes than this are saved sharded (see the module's docstring).
SHARD_BYTES = 2 * 2**30
#: About how many bytes each part of a sharded table holds.
PART_BYTES = 256 * 2**20

_ARRAY_FIELDS = (
    "paths", "labels", "groups", "status", "attempts", "errors",
    "landmarks", "blendshapes", "transforms", "image_sizes", "file_sizes", "mtimes_ns", "crops", "faces_found",
)
#: Crop side when a table is built from rows without any crop and without ``meta["crop"]``.
_NO_CROP = 0


@dataclass(frozen=True, eq=False)
class MeshTable:
    """Per-image face meshes and bookkeeping, column arrays of equal length N.

    ``landmarks`` (N, 478, 3) float32 normalised coordinates; ``blendshapes`` (N, 52);
    ``transforms`` (N, 4, 4); ``image_sizes`` (N, 2) as (width, height); ``file_sizes`` and
    ``mtimes_ns`` identify the file version that was processed (the extraction cache key).
    ``crops`` (N, S, S) uint8 mesh-aligned grey face crops (:mod:`meshfer.crops`; zeros where no
    face was found), or (N, 0, 0) when the table was extracted without crops (``meta["crop"]``
    says how they were made). ``faces_found`` (N,) how many faces MediaPipe found in each image
    (the row holds the largest; 0 where none was found). ``meta`` holds the label order
    (``meta["labels"]``), the landmarker hash and versions.
    """

    paths: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    status: np.ndarray
    attempts: np.ndarray
    errors: np.ndarray
    landmarks: np.ndarray
    blendshapes: np.ndarray
    transforms: np.ndarray
    image_sizes: np.ndarray
    file_sizes: np.ndarray
    mtimes_ns: np.ndarray
    crops: np.ndarray
    faces_found: np.ndarray | None = None  # None: 1 where a face was found, else 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.faces_found is None:
            object.__setattr__(self, "faces_found", (np.asarray(self.status) == STATUS_OK).astype(np.int16))
        for name in _ARRAY_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"MeshTable column {name} has length {len(getattr(self, name))}, expected {n}")

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def empty(cls, meta: dict[str, Any] | None = None) -> "MeshTable":
        """A table with no rows."""
        return cls.from_rows([], meta=meta)

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> "MeshTable":
        """Build from dicts with keys path, label, group, status, and optionally mesh (FaceMesh, whose
        ``crop`` fills :attr:`crops`), attempt, error, image_size, file_size, mtime_ns."""
        n = len(rows)
        side = next((r["mesh"].crop.shape[0] for r in rows if r.get("mesh") is not None and r["mesh"].crop is not None), None)
        if side is None:
            side = int((meta or {}).get("crop", {}).get("size", _NO_CROP)) if (meta or {}).get("crop") else _NO_CROP
        crops = np.zeros((n, side, side), np.uint8)
        lm = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
        bs = np.full((n, len(BLENDSHAPE_NAMES)), np.nan, np.float32)
        tf = np.full((n, 4, 4), np.nan, np.float32)
        sizes = np.zeros((n, 2), np.int32)
        for i, row in enumerate(rows):
            mesh: FaceMesh | None = row.get("mesh")
            if mesh is not None:
                lm[i], bs[i], tf[i] = mesh.landmarks, mesh.blendshapes, mesh.transform
                sizes[i] = mesh.image_size
                if side and mesh.crop is not None:
                    crops[i] = mesh.crop
            elif row.get("image_size") is not None:
                sizes[i] = row["image_size"]

        def col(key: str, default: str = "") -> np.ndarray:
            return np.array([str(r.get(key, default) or default) for r in rows], dtype=str)

        return cls(
            paths=col("path"), labels=col("label"), groups=col("group"), status=col("status"),
            attempts=np.array([(r["mesh"].attempt if r.get("mesh") is not None else "") for r in rows], dtype=str),
            errors=col("error"), landmarks=lm, blendshapes=bs, transforms=tf, image_sizes=sizes,
            file_sizes=np.array([int(r.get("file_size", -1)) for r in rows], np.int64),
            mtimes_ns=np.array([int(r.get("mtime_ns", -1)) for r in rows], np.int64),
            crops=crops,
            faces_found=np.array(
                [
                    int(getattr(r.get("mesh"), "faces_found", 1)) if r.get("mesh") is not None
                    else int(r.get("status") == STATUS_OK)
                    for r in rows
                ],
                np.int16,
            ),
            meta=dict(meta or {}),
        )

    @classmethod
    def concat(cls, tables: Sequence["MeshTable"], meta: dict[str, Any] | None = None) -> "MeshTable":
        """Rows of several tables, in order (meta from ``meta`` or the first table)."""
        tables = list(tables)
        if not tables:
            return cls.empty(meta)
        sides = {t.crops.shape[1:] for t in tables if len(t)}
        if len(sides) > 1:  # tables with and without crops (or of other sizes): drop the crops
            tables = [replace(t, crops=np.zeros((len(t), 0, 0), np.uint8)) for t in tables]
        elif sides:
            side = next(iter(sides))
            tables = [t if len(t) else replace(t, crops=np.zeros((0, *side), np.uint8)) for t in tables]
        arrays = {name: np.concatenate([getattr(t, name) for t in tables]) for name in _ARRAY_FIELDS}
        return cls(**arrays, meta=dict(meta if meta is not None else tables[0].meta))

    # -- access ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def found(self) -> np.ndarray:
        """Boolean mask of rows where a face was found."""
        return self.status == STATUS_OK

    @property
    def has_crops(self) -> bool:
        """True when the table holds face crops."""
        return self.crops.ndim == 3 and self.crops.shape[1] > 0

    @property
    def label_names(self) -> list[str]:
        """Label order: ``meta["labels"]`` or the sorted distinct labels."""
        names = self.meta.get("labels")
        if names:
            return list(names)
        return sorted({str(x) for x in self.labels if x})

    @property
    def y(self) -> np.ndarray:
        """Integer labels in :attr:`label_names` order (-1 for unlabelled rows)."""
        index = {name: i for i, name in enumerate(self.label_names)}
        return np.array([index.get(str(x), -1) for x in self.labels], dtype=np.int64)

    def subset(self, rows: np.ndarray | Sequence[int] | slice) -> "MeshTable":
        """The rows selected by a boolean mask, an index array or a slice."""
        if isinstance(rows, slice):
            idx: Any = rows
        else:
            idx = np.asarray(rows)
            if idx.dtype != bool:
                idx = idx.astype(np.int64)
        return replace(self, **{name: getattr(self, name)[idx] for name in _ARRAY_FIELDS}, meta=dict(self.meta))

    def faces(self) -> "MeshTable":
        """Only the rows where a face was found."""
        return self.subset(self.found)

    def mesh(self, i: int) -> FaceMesh | None:
        """Row ``i`` as a FaceMesh (None when no face was found)."""
        if self.status[i] != STATUS_OK:
            return None
        w, h = self.image_sizes[i]
        crop = self.crops[i] if self.has_crops else None
        return FaceMesh(
            self.landmarks[i], self.blendshapes[i], self.transforms[i], (int(w), int(h)), str(self.attempts[i]), crop,
            max(int(self.faces_found[i]), 1),
        )

    # -- summaries -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Counts: n_images, n_faces, coverage, per_class (images/faces/no_face/unreadable), failed."""
        n = len(self)
        n_faces = int(self.found.sum())
        per_class: dict[str, dict[str, Any]] = {}
        names = self.label_names or [""]
        for label in names + sorted(set(map(str, self.labels)) - set(names)):
            mask = self.labels == label
            if not mask.any() and label not in names:
                continue
            st = self.status[mask]
            images = int(mask.sum())
            faces = int((st == STATUS_OK).sum())
            per_class[label or "(unlabelled)"] = {
                "images": images,
                "faces": faces,
                "no_face": int((st == STATUS_NO_FACE).sum()),
                "unreadable": int((st == STATUS_UNREADABLE).sum()),
                "coverage": round(faces / images, 4) if images else None,
            }
        failed = [
            {"file": str(p), "status": str(s), "reason": str(e)}
            for p, s, e in zip(self.paths, self.status, self.errors)
            if s != STATUS_OK
        ]
        attempts, counts = np.unique(self.attempts[self.found], return_counts=True)
        return {
            "n_images": n,
            "n_faces": n_faces,
            "coverage": round(n_faces / n, 4) if n else 0.0,
            "per_class": per_class,
            "attempts": {str(a): int(c) for a, c in zip(attempts, counts)},
            "several_faces": int((self.faces_found > 1).sum()),
            "failed": failed,
        }

    def to_dataframe(self, *, landmarks: bool = True, blendshapes: bool = True, transforms: bool = False) -> Any:
        """A pandas DataFrame, one row per image, with two-level column groups:
        ``image`` (path, label, group, status, attempt, error, width, height), ``landmarks``
        (x0, y0, z0, ... z477), ``blendshapes`` (by name) and, optionally, ``transform`` (m00..m33)."""
        import pandas as pd

        parts = [
            pd.DataFrame(
                {
                    "path": self.paths, "label": self.labels, "group": self.groups, "status": self.status,
                    "attempt": self.attempts, "error": self.errors,
                    "width": self.image_sizes[:, 0], "height": self.image_sizes[:, 1],
                }
            )
        ]
        keys = ["image"]
        if landmarks:
            cols = [f"{axis}{i}" for i in range(NUM_LANDMARKS) for axis in "xyz"]
            parts.append(pd.DataFrame(self.landmarks.reshape(len(self), -1), columns=cols))
            keys.append("landmarks")
        if blendshapes:
            parts.append(pd.DataFrame(self.blendshapes, columns=list(BLENDSHAPE_NAMES)))
            keys.append("blendshapes")
        if transforms:
            cols = [f"m{r}{c}" for r in range(4) for c in range(4)]
            parts.append(pd.DataFrame(self.transforms.reshape(len(self), -1), columns=cols))
            keys.append("transform")
        return pd.concat(parts, axis=1, keys=keys)

    # -- files ----------------------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Bytes the table's arrays take (about the size of its saved, uncompressed file)."""
        return int(sum(getattr(self, name).nbytes for name in _ARRAY_FIELDS))

    def save(self, path: str | Path, *, shard_bytes: int | None = None) -> Path:
        """Write the table to ``path`` (.npz) atomically: a crash never leaves a half-written file.
        Above ``shard_bytes`` (default :data:`SHARD_BYTES`) it is written sharded (a manifest at
        ``path``, the rows in a folder of parts beside it); a save replaces the parts of an earlier
        sharded file at ``path`` (and only those)."""
        path = Path(path)
        limit = SHARD_BYTES if shard_bytes is None else int(shard_bytes)
        old_folder = _shard_folder_of(path)
        if self.nbytes <= limit or len(self) < 2:
            self._save_single(path, self.meta)
        else:
            self._save_sharded(path, max(1, min(limit, PART_BYTES)))
        new_folder = _shard_folder_of(path)
        if old_folder is not None and old_folder != new_folder:
            shutil.rmtree(old_folder, ignore_errors=True)
        return path

    def _save_single(self, path: Path, meta: dict[str, Any], fmt: str = FORMAT) -> None:
        arrays = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        arrays["format"] = np.array(fmt)
        arrays["meta_json"] = np.array(json.dumps(meta, default=str))
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    def _save_sharded(self, path: Path, part_bytes: int) -> None:
        folder = path.with_name(f"{path.name}.shards-{secrets.token_hex(4)}")
        per_row = max(1, self.nbytes // max(1, len(self)))
        rows = max(1, part_bytes // per_row)
        parts = []
        try:
            folder.mkdir(parents=True)
            for k, start in enumerate(range(0, len(self), rows)):
                name = f"part-{k:05d}.npz"
                part = self.subset(slice(start, start + rows))
                part._save_single(folder / name, {"part_of": path.name, "first_row": start})
                parts.append({"file": name, "rows": len(part)})
            manifest = {"folder": folder.name, "rows": len(self), "parts": parts}
            with atomic_write(path) as f:
                np.savez(f, format=np.array(FORMAT_SHARDED), meta_json=np.array(json.dumps(self.meta, default=str)),
                         shards_json=np.array(json.dumps(manifest)))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @classmethod
    def is_meshtable_file(cls, path: str | Path) -> bool:
        """True when ``path`` is a file written by :meth:`save` (single or sharded)."""
        return _file_format(path) in (FORMAT, FORMAT_SHARDED)

    @classmethod
    def load(cls, path: str | Path) -> "MeshTable":
        """Read a table written by :meth:`save` (single or sharded); MeshferError naming the file
        if it is not one (or a part of a sharded one is missing or damaged)."""
        path = Path(path)
        if not path.exists():
            raise MeshferError(f"{path}: no such file")
        if not path.is_file():
            raise MeshferError(f"{path}: not a regular file, not a meshfer mesh file")
        try:
            with np.load(path, allow_pickle=False) as data:
                fmt = str(data["format"]) if "format" in data.files else None
                if fmt not in (FORMAT, FORMAT_SHARDED):
                    raise MeshferError(f"{path}: not a meshfer mesh file")
                meta = json.loads(str(data["meta_json"]))
                if fmt == FORMAT:
                    arrays = _read_arrays(data)
                else:
                    manifest = json.loads(str(data["shards_json"]))
        except MeshferError:
            raise
        except Exception as exc:
            raise MeshferError(f"{path}: cannot read mesh file ({type(exc).__name__}: {exc})") from None
        if fmt == FORMAT_SHARDED:
            arrays = _read_parts(path, manifest)
        return cls(**arrays, meta=meta)


def _file_format(path: str | Path) -> str | None:
    """The format marker of a meshfer file, None for anything else (never opening a FIFO)."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return str(data["format"]) if "format" in data.files else None
    except Exception:
        return None


def _shard_folder_of(path: Path) -> Path | None:
    """The folder of parts of the sharded table at ``path`` (None when it is not one)."""
    if _file_format(path) != FORMAT_SHARDED:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            folder = str(json.loads(str(data["shards_json"]))["folder"])
    except Exception:
        return None
    if os.sep in folder or not folder.startswith(f"{path.name}.shards-"):
        return None  # never delete anything but our own folder beside the manifest
    return path.with_name(folder)


def _read_arrays(data: Any) -> dict[str, np.ndarray]:
    optional = ("crops", "faces_found")  # columns added later: older files lack them
    arrays = {name: data[name] for name in _ARRAY_FIELDS if name in data.files or name not in optional}
    if "crops" not in arrays:  # written before crops existed
        arrays["crops"] = np.zeros((len(arrays["paths"]), 0, 0), np.uint8)
    return arrays


def _read_parts(path: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The columns of a sharded table, part after part (one column concatenated at a time)."""
    folder = path.with_name(str(manifest["folder"]))
    pieces: list[dict[str, np.ndarray]] = []
    for part in manifest["parts"]:
        file = folder / str(part["file"])
        if not file.is_file():
            raise MeshferError(f"{path}: part {file.name} of this sharded mesh file is missing (in {folder})")
        try:
            with np.load(file, allow_pickle=False) as data:
                if "format" not in data.files or str(data["format"]) != FORMAT:
                    raise MeshferError(f"{file}: not a part of a meshfer mesh file")
                piece = _read_arrays(data)
        except MeshferError:
            raise
        except Exception as exc:
            raise MeshferError(f"{file}: cannot read this part of {path} ({type(exc).__name__}: {exc})") from None
        if len(piece["paths"]) != int(part["rows"]):
            raise MeshferError(f"{file}: holds {len(piece['paths'])} rows, the manifest {path} says {part['rows']}")
        pieces.append(piece)
    if not pieces:
        raise MeshferError(f"{path}: a sharded mesh file without parts")
    sides = {p["crops"].shape[1:] for p in pieces}
    if len(sides) > 1:
        for p in pieces:
            p["crops"] = np.zeros((len(p["paths"]), 0, 0), np.uint8)
    arrays: dict[str, np.ndarray] = {}
    for name in list(pieces[0]):
        arrays[name] = np.concatenate([p[name] for p in pieces])
        for p in pieces:
            del p[name]  # keeps the peak near one copy of the table
    if len(arrays["paths"]) != int(manifest["rows"]):
        raise MeshferError(f"{path}: its parts hold {len(arrays['paths'])} rows, the manifest says {manifest['rows']}")
    return arrays


def _check_fields() -> None:  # keeps _ARRAY_FIELDS in step with the dataclass
    names = tuple(f.name for f in fields(MeshTable) if f.name != "meta")
    assert names == _ARRAY_FIELDS, names


_check_fields()
