"""Matplotlib figures shared by the notebooks: confusion matrices, per-class scores, PCA variance.

Each function draws on ``ax`` (a new figure when None) and returns the Axes, in the usual
matplotlib style. Needs matplotlib, imported on first use.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "plot_face", "plot_confusion", "plot_per_class", "plot_explained_variance", "plot_components", "crop_grid",
    "plot_crops_by_class", "plot_training_history",
]


def _axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_face(image: np.ndarray, landmarks: np.ndarray | None = None, ax: Any = None, title: str | None = None,
              size: float = 1.0) -> Any:
    """An RGB image with its face mesh's landmarks (MediaPipe's normalised (478, 3) array) on top."""
    ax = _axes(ax, (3, 3))
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    if landmarks is not None and np.isfinite(landmarks).all():
        h, w = image.shape[:2]
        ax.scatter(landmarks[:, 0] * w, landmarks[:, 1] * h, s=size, c="lime", linewidths=0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_confusion(metrics: Mapping[str, Any], ax: Any = None, normalize: bool = True, title: str | None = None) -> Any:
    """The confusion matrix of a metrics dict (:func:`meshfer.evaluation.classification_metrics`):
    rows true labels, columns predicted labels plus 'no face'; with ``normalize`` each row is
    divided by its count (recall on the diagonal), the counts are printed in the cells."""
    ax = _axes(ax, (6.5, 5.5))
    counts = np.asarray(metrics["confusion"], dtype=float)
    labels = list(metrics["labels"])
    present = counts.sum(axis=1) > 0
    counts, rows = counts[present], [label for label, p in zip(labels, present) if p]
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None, aspect="auto")
    cols = labels + ["no face"]
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = 0.5 * (shown.max() if shown.size else 1)
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > threshold else "black")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row" if normalize else "images")
    ax.set_title(title or f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    return ax


def plot_per_class(results: Mapping[str, Mapping[str, Any]], metric: str = "f1", ax: Any = None) -> Any:
    """Grouped bars of one per-class score (``f1``, ``precision`` or ``recall``) for several
    approaches, ``{approach: metrics}``."""
    ax = _axes(ax, (8, 4))
    names = list(results)
    labels = list(next(iter(results.values()))["labels"]) if names else []
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(labels))
    for k, name in enumerate(names):
        per_class = results[name]["per_class"]
        ax.bar(x + (k - (len(names) - 1) / 2) * width, [per_class[label][metric] for label in labels], width, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_explained_variance(pca: Any, marks: Sequence[int] = (50, 100, 150), ax: Any = None) -> Any:
    """Cumulative explained variance of a fitted PCA, with the share reached at ``marks`` components."""
    ax = _axes(ax, (6, 4))
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    n = np.arange(1, len(cumulative) + 1)
    ax.plot(n, cumulative, lw=2)
    ax.bar(n, pca.explained_variance_ratio_, color="tab:orange", alpha=0.6, label="per component")
    for m in marks:
        if m <= len(cumulative):
            ax.axvline(m, color="grey", ls=":", lw=1)
            ax.annotate(f"{m}: {cumulative[m - 1]:.1%}", (m, cumulative[m - 1]), textcoords="offset points",
                        xytext=(4, -12), fontsize=8)
    ax.set_xlabel("components")
    ax.set_ylabel("explained variance")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="center right", fontsize=8)
    return ax


def plot_components(
    mean: np.ndarray, components: np.ndarray, scale: float = 3.0, axes: Any = None, titles: Sequence[str] | None = None
) -> Any:
    """Principal components of nose-relative face coordinates drawn as deformations of the mean
    face: for each component, the mean face (grey) and mean +/- ``scale`` standard deviations
    (blue/red) in the x-y plane. ``mean`` is (1434,), ``components`` (K, 1434) already multiplied
    by their standard deviations. Returns the array of Axes."""
    import matplotlib.pyplot as plt

    k = len(components)
    if axes is None:
        _, axes = plt.subplots(1, k, figsize=(2.6 * k, 3), squeeze=False)
        axes = axes[0]
    base = np.asarray(mean).reshape(-1, 3)
    for i, ax in enumerate(np.atleast_1d(axes)[:k]):
        delta = np.asarray(components[i]).reshape(-1, 3) * scale
        for shape, color in ((base, "0.6"), (base + delta, "tab:blue"), (base - delta, "tab:red")):
            ax.scatter(shape[:, 0], shape[:, 1], s=0.6, color=color)
        ax.invert_yaxis()
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(titles[i] if titles else f"component {i + 1}", fontsize=9)
    return axes


def crop_grid(crops: np.ndarray, columns: int, gap: int = 2, fill: int = 255) -> np.ndarray:
    """(N, S, S) uint8 crops tiled into one grey image, ``columns`` per row (empty cells ``fill``)."""
    crops = np.asarray(crops)
    n = len(crops)
    s = crops.shape[1] if n else 1
    rows = max(1, -(-n // columns))
    out = np.full((rows * (s + gap) - gap, columns * (s + gap) - gap), fill, np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        out[r * (s + gap) : r * (s + gap) + s, c * (s + gap) : c * (s + gap) + s] = crops[i]
    return out


def plot_crops_by_class(
    tables: Mapping[str, Any], labels: Sequence[str], per_class: int = 6, seed: int = 0, axes: Any = None
) -> Any:
    """One row per label, one column per data set (``{name: MeshTable}`` with crops): a random
    sample of ``per_class`` face crops of that label side by side, and the mean crop of all of
    them first. Returns the axes array."""
    import matplotlib.pyplot as plt

    names = list(tables)
    if axes is None:
        _, axes = plt.subplots(len(labels), len(names), figsize=(1.1 * (per_class + 1) * len(names), 1.2 * len(labels)),
                               squeeze=False)
    rng = np.random.default_rng(seed)
    for j, name in enumerate(names):
        table = tables[name]
        for i, label in enumerate(labels):
            ax = axes[i, j]
            rows = np.flatnonzero((np.asarray(table.labels) == label) & table.found)
            if len(rows):
                pick = rng.choice(rows, size=min(per_class, len(rows)), replace=False)
                mean = table.crops[rows].astype(np.float32).mean(axis=0)
                mean = ((mean - mean.min()) / max(float(np.ptp(mean)), 1e-6) * 255).astype(np.uint8)
                ax.imshow(crop_grid(np.concatenate([mean[None], table.crops[pick]]), per_class + 1), cmap="gray",
                          vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
            if i == 0:
                ax.set_title(f"{name} (mean, then {per_class} crops)", fontsize=9)
    return axes


def plot_training_history(history: Sequence[Mapping[str, float]], ax: Any = None, title: str | None = None) -> Any:
    """Training loss and held-out macro-F1 / accuracy per epoch (the ``history`` of a hybrid fit)."""
    ax = _axes(ax, (6, 3))
    epochs = [row["epoch"] for row in history]
    for key in ("held_out_macro_f1", "held_out_accuracy", "held_out_fer2013_accuracy", "held_out_photos_accuracy"):
        if history and key in history[0]:
            ax.plot(epochs, [row[key] for row in history], label=key.replace("held_out_", "held-out ").replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out score")
    twin = ax.twinx()
    twin.plot(epochs, [row["loss"] for row in history], color="grey", linestyle=":", label="training loss")
    twin.set_ylabel("training loss")
    if ax.get_legend_handles_labels()[0]:  # a history with the training loss alone has no held-out lines
        ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
