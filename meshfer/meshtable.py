"""MeshTable: the face meshes of a batch of images, as NumPy arrays, saved as one .npz file.

One row per image, whatever happened to it: ``status`` is ``ok`` (a face was found),
``no_face`` or ``unreadable``; ``error`` says why. Failed rows hold NaN arrays. The file is a
plain ``.npz`` (no pickles) and loads with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._io import atomic_write
from .errors import MeshferError
from .landmarks import BLENDSHAPE_NAMES, NUM_LANDMARKS, FaceMesh

__all__ = ["MeshTable", "STATUS_OK", "STATUS_NO_FACE", "STATUS_UNREADABLE", "FORMAT"]

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_UNREADABLE = "unreadable"
#: Marker stored in every file so that meshfer never mistakes (and overwrites) a foreign .npz.
FORMAT = "meshfer.meshtable/1"

_ARRAY_FIELDS = (
    "paths", "labels", "groups", "status", "attempts", "errors",
    "landmarks", "blendshapes", "transforms", "image_sizes", "file_sizes", "mtimes_ns",
)


@dataclass(frozen=True, eq=False)
class MeshTable:
    """Per-image face meshes and bookkeeping, column arrays of equal length N.

    ``landmarks`` (N, 478, 3) float32 normalised coordinates; ``blendshapes`` (N, 52);
    ``transforms`` (N, 4, 4); ``image_sizes`` (N, 2) as (width, height); ``file_sizes`` and
    ``mtimes_ns`` identify the file version that was processed (the extraction cache key).
    ``meta`` holds the label order (``meta["labels"]``), the landmarker hash and versions.
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
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.paths)
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
        """Build from dicts with keys path, label, group, status, and optionally mesh (FaceMesh),
        attempt, error, image_size, file_size, mtime_ns."""
        n = len(rows)
        lm = np.full((n, NUM_LANDMARKS, 3), np.nan, np.float32)
        bs = np.full((n, len(BLENDSHAPE_NAMES)), np.nan, np.float32)
        tf = np.full((n, 4, 4), np.nan, np.float32)
        sizes = np.zeros((n, 2), np.int32)
        for i, row in enumerate(rows):
            mesh: FaceMesh | None = row.get("mesh")
            if mesh is not None:
                lm[i], bs[i], tf[i] = mesh.landmarks, mesh.blendshapes, mesh.transform
                sizes[i] = mesh.image_size
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
            meta=dict(meta or {}),
        )

    @classmethod
    def concat(cls, tables: Sequence["MeshTable"], meta: dict[str, Any] | None = None) -> "MeshTable":
        """Rows of several tables, in order (meta from ``meta`` or the first table)."""
        tables = list(tables)
        if not tables:
            return cls.empty(meta)
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
        return FaceMesh(self.landmarks[i], self.blendshapes[i], self.transforms[i], (int(w), int(h)), str(self.attempts[i]))

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

    def save(self, path: str | Path) -> Path:
        """Write the table to ``path`` (.npz) atomically: a crash never leaves a half-written file."""
        path = Path(path)
        arrays = {name: getattr(self, name) for name in _ARRAY_FIELDS}
        arrays["format"] = np.array(FORMAT)
        arrays["meta_json"] = np.array(json.dumps(self.meta, default=str))
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        return path

    @classmethod
    def is_meshtable_file(cls, path: str | Path) -> bool:
        """True when ``path`` is a file written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                return "format" in data.files and str(data["format"]) == FORMAT
        except Exception:
            return False

    @classmethod
    def load(cls, path: str | Path) -> "MeshTable":
        """Read a table written by :meth:`save`; MeshferError naming the file if it is not one."""
        path = Path(path)
        if not path.exists():
            raise MeshferError(f"{path}: no such file")
        try:
            with np.load(path, allow_pickle=False) as data:
                if "format" not in data.files or str(data["format"]) != FORMAT:
                    raise MeshferError(f"{path}: not a meshfer mesh file")
                arrays = {name: data[name] for name in _ARRAY_FIELDS}
                meta = json.loads(str(data["meta_json"]))
        except MeshferError:
            raise
        except Exception as exc:
            raise MeshferError(f"{path}: cannot read mesh file ({type(exc).__name__}: {exc})") from None
        return cls(**arrays, meta=meta)


def _check_fields() -> None:  # keeps _ARRAY_FIELDS in step with the dataclass
    names = tuple(f.name for f in fields(MeshTable) if f.name != "meta")
    assert names == _ARRAY_FIELDS, names


_check_fields()
