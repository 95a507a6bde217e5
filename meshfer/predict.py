"""From images (or meshes) to predictions: expression, per-eye state, gaze and mouth state.

:class:`Predictor` loads one model per task (the shipped defaults unless told otherwise), computes
each model's feature set from the mesh and runs it. Only ONNX Runtime and NumPy are needed for the
shipped defaults; TensorFlow loads only if a GNN model is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from . import features
from .landmarks import FaceLandmarker, FaceMesh, LandmarkerOptions
from .models import default_card, get_card, load_model

__all__ = ["Classification", "FacePrediction", "ImagePrediction", "Predictor", "predictions_to_dataframe", "DEFAULT"]

#: Pass as a model choice to use the task's shipped default.
DEFAULT = "default"
EYE_SIDES = ("left", "right")


@dataclass(frozen=True)
class Classification:
    """A label and the probability of every label (in the model's label order)."""

    label: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()}}


@dataclass(frozen=True)
class FacePrediction:
    """Everything predicted for one face; a task without a model is None."""

    expression: Classification | None = None
    eyes: dict[str, Classification] | None = None  # the subject's "left" and "right" eye
    gaze: dict[str, float] | None = None  # {"x": ..., "y": ...}
    mouth: Classification | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.expression is not None:
            out["expression"] = self.expression.to_dict()
        if self.eyes is not None:
            out["eyes"] = {side: c.to_dict() for side, c in self.eyes.items()}
        if self.gaze is not None:
            out["gaze"] = {k: round(v, 6) for k, v in self.gaze.items()}
        if self.mouth is not None:
            out["mouth"] = self.mouth.to_dict()
        return out


@dataclass(frozen=True)
class ImagePrediction:
    """The result for one image: ``face`` False (with ``reason``) when no prediction was possible."""

    image: str
    face: bool
    prediction: FacePrediction | None = None
    mesh: FaceMesh | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object printed by ``meshfer predict --json``."""
        out: dict[str, Any] = {"image": self.image, "face": self.face}
        if self.face and self.prediction is not None:
            out.update(self.prediction.to_dict())
        else:
            out["reason"] = self.reason
        return out


def _classifications(labels: Sequence[str], proba: np.ndarray) -> list[Classification]:
    names = list(labels)
    return [
        Classification(names[int(np.argmax(p))], {n: float(v) for n, v in zip(names, p)}) for p in np.atleast_2d(proba)
    ]


class _LazyModel:
    """A model whose file is loaded on first use: the card and how it reads crops come from the card.
    Stands for the default models while the fused graph runs in their place."""

    def __init__(self, card: Any) -> None:
        self.card = card
        self._model: Any = None

    @property
    def needs_crops(self) -> bool:
        return self.card.format == "onnx-hybrid" and bool(self.card.crop)

    @property
    def crop_spec(self) -> Any:
        from .crops import CropSpec

        return CropSpec.from_dict(self.card.crop) if self.card.crop else None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_model":
            raise AttributeError(name)
        if self._model is None:
            self._model = load_model(self.card)
        return getattr(self._model, name)


class Predictor:
    """Runs the chosen model of each task on face meshes (and, through a landmarker, on images).

    Each of ``expression``, ``eyes``, ``gaze`` and ``mouth`` is a model name, a card path,
    ``"default"`` (the shipped default; skipped if none is shipped) or None (task off).
    """

    def __init__(
        self,
        expression: str | Path | None = DEFAULT,
        eyes: str | Path | None = DEFAULT,
        gaze: str | Path | None = DEFAULT,
        mouth: str | Path | None = DEFAULT,
        landmarker: LandmarkerOptions | None = None,
    ) -> None:
        cards: dict[str, Any] = {}
        for task, choice in (("expression", expression), ("eye", eyes), ("gaze", gaze), ("mouth", mouth)):
            if choice is None:
                continue
            card = default_card(task) if choice == DEFAULT else get_card(choice, task)
            if card is not None:
                cards[task] = card
        # the shipped default models of every task also come as one graph, features included: used when
        # exactly those models are chosen (the same outputs, about a third less time per face); the
        # separate files are then loaded only if something asks for them
        self._fused = None
        if all(choice == DEFAULT for choice in (expression, eyes, gaze, mouth)) and cards:
            from .models.fused import default_fused

            self._fused = default_fused(cards)
        self.models: dict[str, Any] = {
            task: _LazyModel(card) if self._fused is not None else load_model(card) for task, card in cards.items()
        }
        options = landmarker or LandmarkerOptions()
        spec = self.crop_spec
        if spec is not None and options.crop != spec:
            from dataclasses import replace

            options = replace(options, crop=spec)  # the landmarker cuts the crops these models read
        self.landmarker_options = options
        self._landmarker: FaceLandmarker | None = None

    @property
    def fused(self) -> Any:
        """The fused graph of the default models (:class:`meshfer.models.fused.FusedSession`) that
        :meth:`predict_arrays` runs instead of the separate models, or None when other models are chosen."""
        return self._fused

    @property
    def crop_spec(self) -> Any:
        """The :class:`~meshfer.crops.CropSpec` the loaded models read (None when none reads crops)."""
        specs = {m.crop_spec for m in self.models.values() if getattr(m, "needs_crops", False)}
        if len(specs) > 1:
            raise ValueError("the chosen models read face crops made in different ways; choose models of one kind")
        return next(iter(specs), None)

    # -- meshes -> predictions ----------------------------------------------------------------

    def predict_arrays(
        self,
        landmarks: np.ndarray,
        blendshapes: np.ndarray,
        image_sizes: np.ndarray | None = None,
        crops: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The raw outputs of each task's model for N faces given as (N, 478, 3) landmarks,
        (N, 52) blendshapes, (N, 2) image sizes and, for models that read them (the ``hybrid``),
        (N, S, S) uint8 face crops (:mod:`meshfer.crops`): ``expression`` and ``mouth`` (N, C)
        probabilities in the card's label order, ``eye`` (N, 2, C) for the [left, right] eye,
        ``gaze`` (N, 2) clipped to the model's output range. What video runs on every frame."""
        landmarks = np.asarray(landmarks, dtype=np.float32).reshape(-1, 478, 3)
        blendshapes = np.asarray(blendshapes, dtype=np.float32).reshape(len(landmarks), -1)
        n = len(landmarks)
        if n == 0 or not self.models:
            return {}
        if self._fused is not None and (crops is not None or not self._fused.needs_crops):
            return self._fused.run(landmarks, blendshapes, image_sizes, crops)
        feats = features.compute_many(
            [m.card.feature_set for m in self.models.values()], landmarks, blendshapes, image_sizes
        )
        out: dict[str, np.ndarray] = {}
        for task, model in self.models.items():
            x = feats[model.card.feature_set]
            if task == "gaze":
                values = model.predict(x)
                bounds = model.card.extra.get("output_range")  # targets that are bounded by definition
                out[task] = values if bounds is None else np.clip(values, bounds[0], bounds[1])
            elif task == "eye":
                out[task] = model.predict_proba(x).reshape(n, len(EYE_SIDES), -1)
            elif getattr(model, "needs_crops", False):
                mirrored = model.mirror_features(landmarks, blendshapes, image_sizes) if model.needs_mirror else None
                out[task] = model.predict_proba(x, crops, mirrored)
            else:
                out[task] = model.predict_proba(x)
        return out

    def to_predictions(self, outputs: dict[str, np.ndarray]) -> list[FacePrediction]:
        """:meth:`predict_arrays` outputs as one :class:`FacePrediction` per face."""
        n = len(next(iter(outputs.values()))) if outputs else 0
        per_task: dict[str, list[Any]] = {}
        for task, values in outputs.items():
            card = self.models[task].card
            if task == "gaze":
                per_task[task] = [dict(zip(card.targets, map(float, row))) for row in values]
            elif task == "eye":
                per_task[task] = [dict(zip(EYE_SIDES, _classifications(card.labels, values[i]))) for i in range(n)]
            else:
                per_task[task] = _classifications(card.labels, values)
        return [
            FacePrediction(
                expression=per_task["expression"][i] if "expression" in per_task else None,
                eyes=per_task["eye"][i] if "eye" in per_task else None,
                gaze=per_task["gaze"][i] if "gaze" in per_task else None,
                mouth=per_task["mouth"][i] if "mouth" in per_task else None,
            )
            for i in range(n)
        ]

    def predict_batch(
        self,
        landmarks: np.ndarray,
        blendshapes: np.ndarray,
        image_sizes: np.ndarray | None = None,
        crops: np.ndarray | None = None,
    ) -> list[FacePrediction]:
        """Predictions for N faces given as (N, 478, 3) landmarks, (N, 52) blendshapes, (N, 2) sizes
        and (N, S, S) crops (needed by models that read them)."""
        n = len(np.asarray(landmarks).reshape(-1, 478, 3))
        if n and not self.models:
            return [FacePrediction() for _ in range(n)]
        return self.to_predictions(self.predict_arrays(landmarks, blendshapes, image_sizes, crops))

    def predict_mesh(self, mesh: FaceMesh) -> FacePrediction:
        """Predictions for one face mesh (with its ``crop`` when a model reads crops)."""
        crops = None if mesh.crop is None else mesh.crop[None]
        return self.predict_batch(mesh.landmarks[None], mesh.blendshapes[None], np.array([mesh.image_size]), crops)[0]

    # -- images -> predictions ----------------------------------------------------------------

    @property
    def landmarker(self) -> FaceLandmarker:
        """The IMAGE-mode landmarker (created on first use)."""
        if self._landmarker is None:
            self._landmarker = FaceLandmarker(self.landmarker_options)
        return self._landmarker

    def predict_image(self, image: str | Path | np.ndarray, name: str | None = None) -> ImagePrediction:
        """Predictions for one image file or RGB array; a bad image gives ``face=False`` and the
        reason, never an exception."""
        from .errors import ImageReadError

        label = name or (str(image) if isinstance(image, (str, Path)) else "<array>")
        try:
            faces = self.landmarker.detect(image)
        except ImageReadError as exc:
            return ImagePrediction(label, False, reason=f"unreadable image: {exc.reason}")
        if not faces:
            return ImagePrediction(label, False, reason="no face found")
        return ImagePrediction(label, True, self.predict_mesh(faces[0]), faces[0])

    def iter_images(self, paths: Iterable[str | Path], progress: bool = False) -> Iterator[ImagePrediction]:
        """Predictions for many images, one at a time, in order."""
        paths = list(paths)
        if progress:
            from tqdm.auto import tqdm

            paths = tqdm(paths, unit="img", desc="Predicting")
        for path in paths:
            yield self.predict_image(path)

    def predict_images(self, paths: Iterable[str | Path], progress: bool = False) -> list[ImagePrediction]:
        """Predictions for many images (a list, whatever the number of inputs)."""
        return list(self.iter_images(paths, progress=progress))

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predictions_to_dataframe(results: Sequence[ImagePrediction]) -> Any:
    """A pandas DataFrame, one row per image, with column groups ``image`` (path, face, reason),
    ``expression`` (label and one probability column per class), ``eyes`` (left/right labels),
    ``gaze`` (x, y) and ``mouth`` (label)."""
    import pandas as pd

    rows = []
    for r in results:
        row: dict[tuple[str, str], Any] = {("image", "path"): r.image, ("image", "face"): r.face, ("image", "reason"): r.reason}
        p = r.prediction
        if p is not None:
            if p.expression is not None:
                row[("expression", "label")] = p.expression.label
                row.update({("expression", k): v for k, v in p.expression.probabilities.items()})
            if p.eyes is not None:
                row.update({("eyes", side): c.label for side, c in p.eyes.items()})
            if p.gaze is not None:
                row.update({("gaze", k): v for k, v in p.gaze.items()})
            if p.mouth is not None:
                row[("mouth", "label")] = p.mouth.label
        rows.append(row)
    frame = pd.DataFrame(rows)
    if len(frame.columns):
        frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame
