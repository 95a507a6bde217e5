"""Training recipes: how each shipped model is reproduced from the data (``meshfer train NAME``).

Each recipe is a function ``train(name, config) -> ModelCard`` in a module of this package (or in
:mod:`meshfer.gnn`); :data:`RECIPES` maps model names to ``"module:function"`` so that nothing heavy
is imported until a recipe runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["TrainConfig", "RECIPES", "get_recipe", "load_meshes", "short_path", "leave_out_copies", "as_bool"]


@dataclass
class TrainConfig:
    """What every recipe receives (from ``meshfer train`` or a notebook)."""

    train_dir: Path  # face_<label> (or eye_/mouth_) folders to fit on
    val_dir: Path | None = None  # folders to select on and report (None: a held-out group split)
    output_dir: Path = Path("models")  # where <name>.json and its model file are written
    cache_dir: Path | None = None  # mesh cache files (.npz) go here; None: no cache
    workers: int | None = None
    limit_per_class: int | None = None
    seed: int = 0
    overwrite: bool = False
    landmarker: Path | None = None
    default: bool = False  # mark the written card as its task's default
    options: dict[str, Any] = field(default_factory=dict)  # recipe-specific (e.g. epochs)


#: model name -> "module:function" (module relative to meshfer).
RECIPES: dict[str, str] = {
    "eyes": "training.companions:train_eyes",
    "mouth": "training.companions:train_mouth",
    "gaze": "training.companions:train_gaze",
    "gnn": "gnn:train",
    "svm": "training.expression:train",
    "blendshapes": "training.expression:train",
    "logreg": "training.expression:train",
    "ensemble": "training.expression:train",
    "hybrid": "training.hybrid:train",
}


def get_recipe(name: str) -> Callable[[str, TrainConfig], Any]:
    """The training function of a model name; KeyError listing the valid names."""
    try:
        target = RECIPES[name]
    except KeyError:
        raise KeyError(f"no training recipe for {name!r}; valid: {', '.join(sorted(RECIPES)) or '(none)'}") from None
    module, func = target.split(":")
    return getattr(importlib.import_module(f"meshfer.{module}"), func)


def load_meshes(directory: Path, config: TrainConfig, prefix: str = "face_", progress: bool = True) -> Any:
    """Face meshes of a data folder (a MeshTable), through the cache in ``config.cache_dir``."""
    from ..extract import extract_folder
    from ..landmarks import LandmarkerOptions

    return extract_folder(
        directory, config.cache_dir, per_class=config.limit_per_class, prefix=prefix, seed=config.seed,
        workers=config.workers, options=LandmarkerOptions(model_path=config.landmarker), progress=progress,
    )


def short_path(directory: str | Path) -> str:
    """The last two parts of a folder path (e.g. 'fer2013/train'): what cards and descriptions
    record of the data, without the paths of the machine that trained the model."""
    return "/".join(Path(str(directory)).expanduser().absolute().parts[-2:])


def leave_out_copies(train: Any, validation: Any) -> tuple[Any, int]:
    """``train`` (a MeshTable) without its images that are byte-identical to an image of
    ``validation``, and how many were left out: a validation image must not be in training
    (FER-2013 train holds 351 copies of 280 of its validation images)."""
    import numpy as np

    from ..datasets import copies_of

    copies = copies_of(train.paths, validation.paths)
    return train.subset(np.flatnonzero(~copies)), int(copies.sum())


def as_bool(value: Any) -> bool:
    """A recipe option as a bool: ``--option key=false`` arrives as the string "false"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
