"""Model cards: the JSON manifest that sits beside every model file.

A card says what the model does (task, labels in order or regression targets), what it reads
(feature set and its width), where it came from (training data, metrics, library versions, the
landmarker model's hash) and the SHA-256 of the model file, which is checked before loading.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..errors import ModelError

__all__ = ["ModelCard", "TASKS", "library_versions"]

#: What a model predicts. ``eye`` models run once per eye.
TASKS = ("expression", "eye", "mouth", "gaze")


@dataclass(frozen=True)
class ModelCard:
    """Manifest of one model. ``path`` (not stored) is where the card was read from."""

    name: str
    task: str
    format: str  # "onnx" (scikit-learn pipeline exported to ONNX) or "gnn-keras"
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
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ModelError(f"model card {self.name!r}: unknown task {self.task!r} (valid: {', '.join(TASKS)})")
        if not self.labels and not self.targets:
            raise ModelError(f"model card {self.name!r}: needs labels (classifier) or targets (regressor)")

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
        try:
            return cls(**{k: v for k, v in data.items() if k in known}, path=path.resolve())
        except TypeError as exc:
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
