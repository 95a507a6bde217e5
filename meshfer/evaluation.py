"""Classification metrics that count every image: an image where no face was found is wrong.

Plain NumPy, so that ``meshfer evaluate`` works on the lean install.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["classification_metrics", "evaluate_table", "format_metrics", "unseen_metrics", "unseen_summary", "NO_FACE"]

#: Predicted class index for an image without a face (or without a prediction).
NO_FACE = -1


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    labels: Sequence[str],
) -> dict[str, Any]:
    """Metrics over all images; ``y_pred == -1`` marks an image without a face.

    Returns ``accuracy`` (every image counted), ``accuracy_on_faces``, ``coverage``,
    ``macro_f1`` (over ``labels``, faceless images counted as misses of their true class),
    ``per_class`` (precision, recall, f1, support), ``confusion`` (rows: true label; columns:
    predicted label, then a last column 'no face'), ``labels``, ``n_images``, ``n_faces``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    k = len(labels)
    n = len(y_true)
    found = y_pred != NO_FACE
    confusion = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(confusion, (y_true, np.where(found, y_pred, k)), 1)
    tp = np.diag(confusion[:, :k]).astype(float)
    predicted = confusion[:, :k].sum(axis=0).astype(float)
    support = confusion.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    correct = (y_true == y_pred) & found
    return {
        "accuracy": float(correct.sum() / n) if n else 0.0,
        "accuracy_on_faces": float(correct.sum() / found.sum()) if found.any() else 0.0,
        "coverage": float(found.mean()) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            label: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": confusion.tolist(),
        "labels": list(labels),
        "n_images": int(n),
        "n_faces": int(found.sum()),
    }


def format_metrics(metrics: dict[str, Any]) -> str:
    """A readable report: headline figures, per-class table and confusion matrix."""
    labels = metrics["labels"]
    width = max(10, *(len(label) for label in labels))
    lines = [
        f"images {metrics['n_images']}, faces found {metrics['n_faces']} (coverage {metrics['coverage']:.3f})",
        f"accuracy (every image) {metrics['accuracy']:.4f}   accuracy on faces {metrics['accuracy_on_faces']:.4f}"
        f"   macro-F1 {metrics['macro_f1']:.4f}",
        "",
        f"{'class':<{width}} precision  recall     f1  support",
    ]
    for label in labels:
        row = metrics["per_class"][label]
        lines.append(
            f"{label:<{width}} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['f1']:>6.3f} {row['support']:>8d}"
        )
    short = [label[:7] for label in labels] + ["no face"]
    lines += ["", "confusion (rows: true, columns: predicted)", " " * width + "".join(f"{s:>9}" for s in short)]
    for label, row in zip(labels, metrics["confusion"]):
        lines.append(f"{label:<{width}}" + "".join(f"{v:>9d}" for v in row))
    return "\n".join(lines)


def evaluate_table(model: Any, table: Any) -> dict[str, Any]:
    """Metrics of a classifier (anything with ``card`` and ``predict_proba``) on a MeshTable.

    Rows whose label the model does not know are left out (their count is ``excluded``); rows
    without a face count as wrong.
    """
    from . import features

    labels = list(model.card.labels)
    index = {label: i for i, label in enumerate(labels)}
    keep = np.array([str(label) in index for label in table.labels], dtype=bool)
    table = table.subset(keep)
    y_true = np.array([index[str(label)] for label in table.labels], dtype=np.int64)
    y_pred = np.full(len(table), NO_FACE, dtype=np.int64)
    found = table.found
    if found.any():
        x = features.compute(
            model.card.feature_set, table.landmarks[found], table.blendshapes[found], table.image_sizes[found]
        )
        if getattr(model, "needs_crops", False):
            if not table.has_crops:
                from .errors import MeshferError

                raise MeshferError(
                    f"model {model.card.name!r} reads face crops, and these meshes were extracted without them "
                    "(extract them again: meshfer extract keeps crops by default)"
                )
            mirrored = None
            if getattr(model, "needs_mirror", False):
                mirrored = model.mirror_features(table.landmarks[found], table.blendshapes[found], table.image_sizes[found])
            y_pred[found] = model.predict_proba(x, table.crops[found], mirrored).argmax(axis=1)
        else:
            y_pred[found] = model.predict_proba(x).argmax(axis=1)
    metrics = classification_metrics(y_true, y_pred, labels)
    metrics["excluded"] = int((~keep).sum())
    return metrics


def unseen_metrics(model: Any, table: Any, train_paths: Sequence[Any]) -> dict[str, Any]:
    """Headline metrics on the rows of ``table`` whose image is not byte-identical to one of
    ``train_paths`` (FER-2013 validation holds 280 copies of training images), as card metrics:
    ``unseen_accuracy``, ``unseen_accuracy_on_faces``, ``unseen_macro_f1``, ``unseen_n_images``."""
    from .datasets import copies_of

    copies = copies_of(table.paths, train_paths)
    return unseen_summary(evaluate_table(model, table.subset(np.flatnonzero(~copies))), int(copies.sum()))


def unseen_summary(metrics: dict[str, Any], n_copies: int) -> dict[str, Any]:
    """The card entries of metrics computed without the ``n_copies`` copies of training images."""
    return {"unseen_accuracy": float(metrics["accuracy"]), "unseen_accuracy_on_faces": float(metrics["accuracy_on_faces"]),
            "unseen_macro_f1": float(metrics["macro_f1"]), "unseen_n_images": int(metrics["n_images"]),
            "copies_of_training_images": n_copies}
