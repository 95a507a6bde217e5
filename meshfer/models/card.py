"""Model cards: the JSON manifest that sits beside every model file.

A card says what the model does (task, labels in order or regression targets), what it reads
(feature set and its width), where it came from (training data, metrics, library versions, the
landmarker model's hash) and the SHA-256 of the model file, which is checked before loading.
"""

from __future__ import annotations

import json
import platform
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..errors import ModelError

__all__ = ["ModelCard", "TASKS", "FORMATS", "library_versions", "feature_width"]

#: What a model predicts. ``eye`` models run once per eye.
TASKS = ("expression", "eye", "mouth", "gaze")
#: Model file formats: a scikit-learn pipeline exported to ONNX, a network reading the face crop
#: and the mesh (two ONNX inputs), a Keras graph network (needs TensorFlow).
FORMATS = ("onnx", "onnx-hybrid", "gnn-keras")
#: Tasks whose models are regressors (``targets``); the others are classifiers (``labels``).
REGRESSION_TASKS = ("gaze",)


@lru_cache(maxsize=None)
def feature_width(name: str) -> int:
    """Number of values per row of feature set ``name`` (computed once on a synthetic mesh);
    KeyError listing the valid names for an unknown one."""
    import numpy as np

    from .. import features

    if name not in features.FEATURE_SETS:
        raise KeyError(f"unknown feature set {name!r}; valid: {', '.join(sorted(features.FEATURE_SETS))}")
    rng = np.random.default_rng(0)
    lm = rng.uniform(0.3, 0.7, (1, 478, 3)).astype(np.float32)
    bs = rng.uniform(0.0, 1.0, (1, 52)).astype(np.float32)
    x = features.compute(name, lm, bs, np.array([[100, 100]]))
    return int(np.prod(x.shape[1:]))


def _names(value: Any, what: str) -> str | None:
    """Why ``value`` is not a list of unique, non-empty strings (None when it is)."""
    if not isinstance(value, (list, tuple)):
        return f"{what} must be a list of names, not {type(value).__name__} {value!r}"
    bad = [v for v in value if not isinstance(v, str) or not v.strip()]
    if bad:
        return f"{what} must be non-empty strings (got {bad[0]!r})"
    dupes = sorted({v for v in value if list(value).count(v) > 1})
    if dupes:
        return f"{what} must be unique ({', '.join(dupes)} repeated)"
    return None


@dataclass(frozen=True)
class ModelCard:
    """Manifest of one model. ``path`` (not stored) is where the card was read from."""

    name: str
    task: str
    format: str  # "onnx" (scikit-learn pipeline), "onnx-hybrid" (crop + mesh network) or "gnn-keras"
    file: str  # model file name, relative to the card's folder
    sha256: str
    feature_set: str
    n_features: int
    labels: list[str] = field(default_factory=list)  # classifiers: class order of the outputs
    targets: list[str] = field(default_factory=list)  # regressors: output columns
    default: bool = False
    description: str = ""
    estimator: str = ""
    training_data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    landmarker_sha256: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    crop: dict[str, Any] = field(default_factory=dict)  # models that read face crops: how they are made
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ModelError(f"{self._where}: {problem}")

    @property
    def _where(self) -> str:
        return str(self.path) if self.path is not None else f"model card {self.name!r}"

    def _problem(self) -> str | None:
        """The first thing wrong with the card on its own (its model file is checked when the
        model is loaded: :func:`meshfer.models.onnx.check_session`)."""
        for name in ("name", "task", "format", "file", "sha256", "feature_set"):
            if not isinstance(getattr(self, name), str):
                return f"{name} must be a string, not {getattr(self, name)!r}"
        if not self.name.strip():
            return "name is empty"
        if self.task not in TASKS:
            return f"unknown task {self.task!r} (valid: {', '.join(TASKS)})"
        if self.format not in FORMATS:
            return f"unknown model format {self.format!r} (valid: {', '.join(FORMATS)})"
        if not self.file.strip():
            return "file is empty"
        if self.sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            return f"sha256 must be 64 hexadecimal digits, not {self.sha256!r}"
        for name in ("training_data", "metrics", "versions", "extra", "crop"):
            if not isinstance(getattr(self, name), dict):
                return f"{name} must be a JSON object, not {type(getattr(self, name)).__name__}"
        if not self.labels and not self.targets:
            return "needs labels (classifier) or targets (regressor)"
        for name in ("labels", "targets"):
            problem = _names(getattr(self, name), name)
            if problem:
                return problem
        if self.labels and self.targets:
            return "has both labels (classifier) and targets (regressor)"
        if self.task in REGRESSION_TASKS and not self.targets:
            return f"a {self.task} model is a regressor: it needs targets, not labels"
        if self.task not in REGRESSION_TASKS and not self.labels:
            return f"a {self.task} model is a classifier: it needs labels, not targets"
        if self.labels and len(self.labels) < 2:
            return f"a classifier needs at least two labels (got {self.labels})"
        if isinstance(self.n_features, bool) or not isinstance(self.n_features, int) or self.n_features < 1:
            return f"n_features must be a positive whole number, not {self.n_features!r}"
        try:
            width = feature_width(self.feature_set)
        except KeyError as exc:
            return str(exc.args[0])
        if width != self.n_features:
            return f"n_features is {self.n_features} but feature set {self.feature_set!r} has {width} values per face"
        if self.format == "onnx-hybrid":
            if not self.crop:
                return "an onnx-hybrid model reads face crops: its card needs a non-empty 'crop' entry"
            size = self.crop.get("size", 48)
            if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 1024:
                return f"crop.size must be a whole number of pixels from 8 to 1024, not {size!r}"
            if not self.labels:
                return "an onnx-hybrid model is a classifier: it needs labels"
        if self.format == "gnn-keras":
            hparams = self.extra.get("hparams")
            if not isinstance(hparams, dict):
                return "a gnn-keras card needs extra.hparams (the network's architecture)"
        return None

    @property
    def is_classifier(self) -> bool:
        return bool(self.labels)

    @property
    def model_path(self) -> Path:
        """Absolute path of the model file."""
        base = self.path.parent if self.path is not None else Path(".")
        return base / self.file

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d

    def save(self, path: str | Path) -> Path:
        """Write the card as JSON (atomically)."""
        path = Path(path)
        with atomic_write(path) as f:
            f.write((json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        """Read a card; ModelError naming the file when it is missing or malformed."""
        path = Path(path)
        if path.exists() and not path.is_file():  # a folder, a FIFO (which would block), a device
            raise ModelError(f"{path}: not a model card (not a regular file)")
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelError(f"{path}: model card not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: unreadable model card ({exc})") from None
        if not isinstance(data, dict):
            raise ModelError(f"{path}: model card is not a JSON object")
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        missing = {"name", "task", "format", "file", "sha256", "feature_set", "n_features"} - set(data)
        if missing:
            raise ModelError(f"{path}: model card lacks {', '.join(sorted(missing))}")
        sha = data.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ModelError(f"{path}: sha256 must be the 64 hexadecimal digits of the model file's SHA-256, not {sha!r}")
        try:
            return cls(**{k: v for k, v in data.items() if k in known}, path=path.resolve())
        except ModelError as exc:
            raise ModelError(f"{path}: invalid model card: {str(exc).split(': ', 1)[-1]}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{path}: malformed model card ({exc})") from None


def library_versions(*names: str) -> dict[str, str]:
    """Versions of Python, meshfer and the named distributions that are installed."""
    from importlib import metadata

    from .._version import __version__

    out = {"python": platform.python_version(), "meshfer": __version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
