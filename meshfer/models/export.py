"""Saving trained scikit-learn pipelines as ONNX files with their model cards.

Needs the training extras (scikit-learn, skl2onnx, onnx); the prediction side only needs ONNX
Runtime. Every export is checked: the ONNX model must reproduce the scikit-learn model's
predictions on the sample given.
"""

from __future__ import annotations

import gzip
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._io import atomic_write
from ..assets import sha256_of
from ..errors import ModelError
from .card import ModelCard, library_versions, utc_now
from .fold import folded_onnx_bytes
from .onnx import OnnxModel

__all__ = ["save_onnx_model", "to_onnx_bytes", "COMPRESS_ABOVE"]

#: Models larger than this (bytes of ONNX) are saved gzip-compressed by default.
COMPRESS_ABOVE = 4_000_000


def to_onnx_bytes(estimator: Any, n_features: int, *, dtype: type = np.float64) -> bytes:
    """Convert a fitted scikit-learn estimator or Pipeline to serialized ONNX (probabilities as a
    plain (N, C) tensor, no ZipMap)."""
    from skl2onnx import to_onnx

    sample = np.zeros((1, n_features), dtype=dtype)
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    options = {id(final): {"zipmap": False}} if hasattr(final, "classes_") else None
    model = to_onnx(estimator, sample, options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    return model.SerializeToString()


def save_onnx_model(
    estimator: Any,
    directory: str | Path,
    *,
    name: str,
    task: str,
    feature_set: str,
    check_features: np.ndarray,
    labels: Sequence[str] = (),
    targets: Sequence[str] = (),
    default: bool = False,
    description: str = "",
    training_data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    landmarker_sha256: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
    tolerance: float = 1e-4,
    dtype: type = np.float64,
    compress: bool | None = None,
    fold: bool = True,
) -> ModelCard:
    """Export ``estimator`` to ``<directory>/<name>.onnx`` with card ``<name>.json``; return the card.

    ``labels`` are the class names in the order of ``estimator.classes_`` (which must be
    0..C-1 integers or those names). ``check_features`` (a few hundred rows) is used to verify that
    the ONNX model agrees with scikit-learn. Existing files are kept unless ``overwrite``.
    ``dtype`` np.float32 halves the file (and lets ONNX's SVM operator hold the support vectors).
    ``compress`` writes ``<name>.onnx.gz`` instead (None: when the model exceeds
    :data:`COMPRESS_ABOVE` bytes; ONNX stores attribute floats unpacked, so large SVMs shrink by ~25%).
    ``fold`` (with float32) writes a scaler -> PCA -> MLP vote as a few matrix products
    (:mod:`meshfer.models.fold`) instead of skl2onnx's operator-per-step graph.
    """
    directory = Path(directory)
    card_path = directory / f"{name}.json"
    candidates = [directory / f"{name}.onnx", directory / f"{name}.onnx.gz", card_path]
    if not overwrite:
        for p in candidates:
            if p.exists():
                raise ModelError(f"{p}: exists; pass overwrite=True (--overwrite) to replace it")
    x = np.asarray(check_features, dtype=np.float64)
    data = folded_onnx_bytes(estimator, x.shape[1]) if fold and dtype == np.float32 else None
    if data is None:
        data = to_onnx_bytes(estimator, x.shape[1], dtype=dtype)
    if compress is None:
        compress = len(data) > COMPRESS_ABOVE
    onnx_path = candidates[1] if compress else candidates[0]
    card = ModelCard(
        name=name,
        task=task,
        format="onnx",
        file=onnx_path.name,
        sha256="",  # set once the file is written
        feature_set=feature_set,
        n_features=int(x.shape[1]),
        labels=list(labels),
        targets=list(targets),
        default=default,
        description=description,
        estimator=_describe(estimator),
        training_data=dict(training_data or {}),
        metrics=dict(metrics or {}),
        versions=library_versions("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "mediapipe", "numpy"),
        landmarker_sha256=landmarker_sha256,
        created=utc_now(),
        extra=dict(extra or {}),
        path=card_path.resolve(),
    )
    # Checked before anything is written: a failed export leaves an existing model as it was.
    _check_agreement(estimator, OnnxModel(card, data), x, tolerance)
    with atomic_write(onnx_path) as f:
        f.write(gzip.compress(data, compresslevel=9, mtime=0) if compress else data)
    for stale in candidates[:2]:
        if stale != onnx_path:
            stale.unlink(missing_ok=True)  # the other format of the model being replaced
    card = replace(card, sha256=sha256_of(onnx_path))
    card.save(card_path)
    return card


def _describe(estimator: Any) -> str:
    if hasattr(estimator, "steps"):
        return " -> ".join(f"{type(step).__name__}" for _, step in estimator.steps)
    return type(estimator).__name__


def _check_agreement(estimator: Any, model: OnnxModel, x: np.ndarray, tolerance: float) -> None:
    if model.card.is_classifier:
        expected = np.asarray(estimator.predict_proba(x))
        got = model.predict_proba(x)
    else:
        expected = np.asarray(estimator.predict(x), dtype=np.float64).reshape(len(x), -1)
        got = model.predict(x)
    worst = float(np.max(np.abs(expected - got))) if len(x) else 0.0
    if worst > tolerance:
        raise ModelError(f"{model.card.name}: ONNX export disagrees with scikit-learn (max difference {worst:.2e})")
