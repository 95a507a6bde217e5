"""The model registry: every shipped model, by name, with one default per task.

Shipped models live in ``meshfer/data/models/`` as ``<name>.json`` cards beside their files.
Anywhere a model name is accepted, a path to a card (``my_model.json``) works too.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..assets import sha256_of
from ..errors import ModelError, UnknownModelError
from .card import TASKS, ModelCard

__all__ = ["models_dir", "list_models", "get_card", "default_card", "load_model", "verify_file"]


def models_dir() -> Path:
    """The folder of shipped models inside the installed package."""
    return Path(str(resources.files("meshfer").joinpath("data/models")))


@lru_cache(maxsize=1)
def _shipped() -> dict[str, ModelCard]:
    cards: dict[str, ModelCard] = {}
    folder = models_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            card = ModelCard.load(path)
            cards[card.name] = card
    return cards


def list_models(task: str | None = None) -> list[ModelCard]:
    """Cards of the shipped models (of one task when given), defaults first within each task."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    cards = [c for c in _shipped().values() if task is None or c.task == task]
    return sorted(cards, key=lambda c: (TASKS.index(c.task), not c.default, c.name))


def get_card(name: str | Path, task: str | None = None) -> ModelCard:
    """The card of a shipped model by name, or of a card file by path.

    An unknown name raises UnknownModelError listing the valid names (of ``task`` when given).
    """
    text = str(name)
    if text.endswith(".json") or Path(text).is_file():
        card = ModelCard.load(text)
    else:
        card = _shipped().get(text)
        if card is None:
            valid = ", ".join(c.name for c in list_models(task)) or "(none shipped)"
            kind = f"{task} model" if task else "model"
            raise UnknownModelError(f"unknown {kind} {text!r}; valid: {valid}")
    if task is not None and card.task != task:
        raise ModelError(f"model {card.name!r} is a {card.task} model, not a {task} model")
    return card


def default_card(task: str) -> ModelCard | None:
    """The default model of a task (None when no model of that task is shipped). Without a card
    marked default, the first lean one (not a GNN, which needs TensorFlow) stands in."""
    cards = list_models(task)
    defaults = [c for c in cards if c.default]
    lean = [c for c in cards if c.format != "gnn-keras"]
    return defaults[0] if defaults else (lean[0] if lean else None)


def verify_file(card: ModelCard) -> Path:
    """Check that the card's model file exists and matches its SHA-256; return its path."""
    path = card.model_path
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        raise ModelError(f"{path}: model file of {card.name!r} {what}")
    digest = sha256_of(path)
    if digest != card.sha256:
        raise ModelError(
            f"{path}: model file is corrupt or was changed (SHA-256 {digest[:12]}..., card says {card.sha256[:12]}...)"
        )
    return path


def load_model(name: str | Path | ModelCard, task: str | None = None) -> Any:
    """Load a model by name, card path or card: an object with ``card``, ``predict`` and, for
    classifiers, ``predict_proba``. The file is checked against the card's SHA-256 first."""
    card = name if isinstance(name, ModelCard) else get_card(name, task)
    verify_file(card)
    if card.format == "onnx":
        from .onnx import OnnxModel

        return OnnxModel(card)
    if card.format == "onnx-hybrid":
        from .onnx import HybridOnnxModel

        return HybridOnnxModel(card)
    if card.format == "gnn-keras":
        with open(card.model_path, "rb") as f:  # checked before TensorFlow is imported
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise ModelError(f"{card.model_path}: cannot load the GNN weights (not an HDF5 file)")
        from ..gnn import load_gnn  # TensorFlow is imported only here

        return load_gnn(card)
    raise ModelError(f"{card.path}: unknown model format {card.format!r}")
