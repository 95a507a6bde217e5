"""Expression models: from MeshTables to fitted, evaluated and saved classifiers.

The protocol (the same for every approach, in the notebooks and in ``meshfer train``):

- features come from a named feature set (:mod:`meshfer.features`) of the faces found;
- one scikit-learn Pipeline (scaler, PCA and classifier, :mod:`meshfer.classifiers`) is fitted
  on the training split only, optionally on the training faces plus their mirror images
  (landmark-level flip, :func:`meshfer.features.mirror_landmarks`), which share their source's
  group;
- evaluation counts every image: an image where no face was found is wrong
  (:func:`meshfer.evaluation.classification_metrics`). Images whose label the model lacks (the
  photos have no ``fear``) are left out of the figures.

:data:`EXPRESSION_MODELS` holds the recipe of every shipped expression model; :func:`train` is
what ``meshfer train <name>`` runs.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import features
from ..evaluation import NO_FACE, classification_metrics
from ..meshtable import MeshTable
from . import as_bool

__all__ = [
    "EXPRESSION_LABELS",
    "ExpressionSpec",
    "EXPRESSION_MODELS",
    "DEFAULT_MODEL",
    "FeatureData",
    "prepare",
    "cached_features",
    "augmented_meshes",
    "selection_split",
    "build",
    "fit",
    "predict_labels",
    "evaluate",
    "search",
    "summary_row",
    "comparison_frame",
    "per_class_frame",
    "train",
]

#: The expression classes of FER-2013 (folder names without ``face_``), in model output order.
EXPRESSION_LABELS = ("angry", "disgusted", "fear", "happy", "neutral", "sad", "surprised")


@dataclass(frozen=True)
class ExpressionSpec:
    """How one expression model is made: feature set, pipeline kind and options, and whether the
    mirrored training faces are added."""

    feature_set: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    mirror: bool = False
    class_balance: float = 0.0  # sample weights (n_largest / n_class) ** class_balance
    description: str = ""

    def with_options(self, options: Mapping[str, Any]) -> "ExpressionSpec":
        """A copy with ``options`` applied: ``feature_set``, ``kind``, ``mirror`` and
        ``class_balance`` replace those fields, anything else is a pipeline option (see
        :mod:`meshfer.classifiers`)."""
        options = dict(options)
        fields_ = {k: options.pop(k) for k in ("feature_set", "kind", "mirror", "class_balance") if k in options}
        if "mirror" in fields_:
            fields_["mirror"] = as_bool(fields_["mirror"])
        if "class_balance" in fields_:
            fields_["class_balance"] = float(fields_["class_balance"])
        return replace(self, params={**self.params, **options}, **fields_)


#: The shipped expression models (``meshfer train <name>`` reproduces each).
EXPRESSION_MODELS: dict[str, ExpressionSpec] = {
    "svm": ExpressionSpec(
        "nose_relative", "svm", {"n_components": 50, "C": 5.0},
        description="PCA (50 components) + RBF SVM on the nose-relative landmark coordinates (the reference design)",
    ),
    "blendshapes": ExpressionSpec(
        "blendshapes_distances", "svm", {"n_components": 50, "C": 5.0},
        description="PCA (50 components) + RBF SVM on the 52 blendshapes and the distances of all points to point 151",
    ),
    "logreg": ExpressionSpec(
        "blendshapes_distances", "logreg", {"C": 1.0},
        description="logistic regression on the 52 blendshapes and the distances to point 151 (baseline)",
    ),
    "ensemble": ExpressionSpec(
        "blendshapes_keypoints", "mlp_ensemble",
        # alpha chosen on held-out training images (SVM_Blendshapes/Selection.ipynb); 0.1 before.
        {"n_components": 150, "n_members": 5, "hidden": (256,), "alpha": 0.5, "max_iter": 40},
        mirror=True,
        class_balance=0.5,
        description="soft vote of 5 MLPs (PCA 150) on the 52 blendshapes and the distances between 86 key points, "
        "trained on the faces and their mirror images, rare classes up-weighted",
    ),
}

#: The best mesh-only recipe (the default expression model before the hybrid, which also reads the face
#: crop: :mod:`meshfer.training.hybrid`).
DEFAULT_MODEL = "ensemble"


# ------------------------------------------------------------------------------------------------
# Features of a MeshTable


@dataclass(frozen=True)
class FeatureData:
    """One feature set of a MeshTable: ``x``/``y``/``groups`` for the found faces (with their
    mirror images appended when prepared with ``mirror=True``), plus what evaluation needs about
    every image: ``y_all`` (label index, -1 for a label outside ``labels``) and ``found``."""

    feature_set: str
    labels: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    y_all: np.ndarray
    found: np.ndarray
    mirrored: bool = False

    @property
    def n_images(self) -> int:
        return len(self.y_all)

    def save(self, path: str | Path) -> Path:
        """Write the arrays to a ``.npz`` file (no pickles)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, feature_set=np.array(self.feature_set), labels=np.array(self.labels), x=self.x, y=self.y,
            groups=self.groups.astype(str), y_all=self.y_all, found=self.found, mirrored=np.array(self.mirrored),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FeatureData":
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            return cls(
                str(f["feature_set"]), tuple(str(v) for v in f["labels"]), f["x"], f["y"], f["groups"],
                f["y_all"], f["found"], bool(f["mirrored"]),
            )


def prepare(
    table: MeshTable, feature_set: str, labels: Sequence[str] = EXPRESSION_LABELS, *, mirror: bool = False
) -> FeatureData:
    """Compute ``feature_set`` for the faces of ``table``; with ``mirror`` also for their mirror
    images (same label and group: a mirror image is never on the other side of a split)."""
    labels = tuple(labels)
    index = {label: i for i, label in enumerate(labels)}
    y_all = np.array([index.get(str(label), -1) for label in table.labels], dtype=np.int64)
    found = np.asarray(table.found, dtype=bool)
    rows = found & (y_all >= 0)
    lm, bs, sizes = table.landmarks[rows], table.blendshapes[rows], table.image_sizes[rows]
    x = features.compute(feature_set, lm, bs, sizes)
    y, groups = y_all[rows], np.asarray(table.groups)[rows]
    if mirror and len(x):
        xm = features.compute(feature_set, features.mirror_landmarks(lm), features.mirror_blendshapes(bs), sizes)
        x, y, groups = np.concatenate([x, xm]), np.concatenate([y, y]), np.concatenate([groups, groups])
    return FeatureData(feature_set, labels, x, y, groups, y_all, found, mirror)


def cached_features(
    data_dir: str | Path,
    feature_set: str,
    *,
    output_dir: str | Path | None = None,
    mesh_cache: str | Path | None = None,
    per_class: int | None = None,
    labels: Sequence[str] = EXPRESSION_LABELS,
    seed: int = 0,
    progress: bool = True,
) -> FeatureData:
    """Feature set ``feature_set`` of a labelled folder (at most ``per_class`` images per label),
    read from ``output_dir/<feature_set>_<folder>[-n<per_class>].npz`` when that file exists,
    else computed from the meshes (extracted through ``mesh_cache``) and saved there."""
    from ..extract import extract_folder

    data_dir = Path(data_dir)
    path = None
    if output_dir is not None:
        suffix = f"-n{per_class}" if per_class else ""
        path = Path(output_dir) / f"{feature_set}_{data_dir.name}{suffix}.npz"
        if path.exists():
            data = FeatureData.load(path)
            if data.labels == tuple(labels):
                return data
    table = extract_folder(data_dir, mesh_cache, per_class=per_class, seed=seed, progress=progress)
    data = prepare(table, feature_set, labels)
    if path is not None:
        data.save(path)
    return data


def unseen_features(
    val_dir: str | Path,
    train_dir: str | Path,
    feature_set: str,
    *,
    mesh_cache: str | Path | None = None,
    per_class: int | None = None,
    labels: Sequence[str] = EXPRESSION_LABELS,
    seed: int = 0,
    progress: bool = True,
) -> FeatureData:
    """Feature set ``feature_set`` of the images of ``val_dir`` (at most ``per_class`` per label)
    that are not byte-identical copies of an image of ``train_dir``: the validation images no
    model trained on ``train_dir`` has seen (FER-2013: 3,309 of 3,589)."""
    from ..datasets import copies_of, scan_dataset
    from ..extract import extract_folder

    table = extract_folder(val_dir, mesh_cache, per_class=per_class, seed=seed, progress=progress)
    copies = copies_of(table.paths, scan_dataset(train_dir))
    return prepare(table.subset(np.flatnonzero(~copies)), feature_set, labels)


def selection_split(
    train: MeshTable, validation: MeshTable | None = None, *, test_size: float = 0.1, seed: int = 0
) -> tuple[MeshTable, MeshTable]:
    """(fit, held_out) parts of a training MeshTable, for choosing a model's options without
    looking at the validation folder. Training images that are byte-identical to an image of
    ``validation`` are left out of both; ``test_size`` of the rest is held out by a split
    stratified by label that keeps byte-identical images and augmented copies on one side."""
    from ..datasets import duplicate_groups, group_split
    from . import leave_out_copies

    if validation is not None:
        train, _ = leave_out_copies(train, validation)
    groups = duplicate_groups(train.paths, train.groups)
    fit_rows, held_rows = group_split(groups.astype(str), test_size, seed=seed, stratify=train.labels)
    return train.subset(fit_rows), train.subset(held_rows)


def augmented_meshes(
    data_dir: str | Path,
    work_dir: str | Path,
    mesh_cache: str | Path | None = None,
    *,
    per_class: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> MeshTable:
    """Meshes of augmented copies (:mod:`meshfer.augment`, one per image) of a read-only labelled
    folder: the copies are written under ``work_dir`` beside links to their sources (see
    :func:`meshfer.augment.augmented_tree`), and only the copies are returned. Their groups are
    those of their sources, so ``MeshTable.concat([meshes, copies])`` is a training set that a
    group split cannot tear apart. Cached in ``mesh_cache`` like any extraction."""
    from ..augment import augmented_tree
    from ..datasets import Dataset, is_augmented, scan_dataset
    from ..extract import cache_file, extract

    source = scan_dataset(data_dir).limit(per_class, seed=seed)
    work_dir = Path(work_dir)
    augmented_tree(source, work_dir, None, seed=seed, progress=progress)
    tree = scan_dataset(work_dir)
    copies = Dataset(tree.root, [r for r in tree.records if is_augmented(r.path)], tree.labels, tree.problems)
    output = cache_file(work_dir, mesh_cache, per_class) if mesh_cache is not None else None
    return extract(copies, output, workers=workers, progress=progress)


# ------------------------------------------------------------------------------------------------
# Fit, predict, evaluate


def build(spec: ExpressionSpec, **overrides: Any) -> Any:
    """The unfitted pipeline of ``spec`` (options in ``overrides`` win)."""
    from ..classifiers import build_pipeline

    return build_pipeline(spec.kind, **{**spec.params, **overrides})


def fit(pipeline: Any, data: FeatureData, class_balance: float = 0.0) -> Any:
    """Fit ``pipeline`` on the faces of ``data`` (group-aware internal folds), with classes
    reweighted by ``class_balance`` (see :func:`meshfer.classifiers.class_weights`); returns it."""
    from ..classifiers import class_weights, fit_pipeline

    if not len(data.x):
        raise ValueError("no training faces")
    weights = class_weights(data.y, class_balance) if class_balance else None
    return fit_pipeline(pipeline, data.x, data.y, data.groups, sample_weight=weights)


def predict_labels(estimator: Any, data: FeatureData) -> np.ndarray:
    """Predicted label index of every image of ``data`` (:data:`NO_FACE` where no face was
    found); images whose label is outside ``data.labels`` get -1 too and are left out by
    :func:`evaluate`."""
    y_pred = np.full(data.n_images, NO_FACE, dtype=np.int64)
    rows = data.found & (data.y_all >= 0)
    n = int(rows.sum())
    if n:
        y_pred[rows] = np.asarray(estimator.predict(data.x[:n]), dtype=np.int64)
    return y_pred


def evaluate(estimator: Any, data: FeatureData) -> dict[str, Any]:
    """Metrics of a fitted estimator on ``data``, every image counted (see
    :func:`meshfer.evaluation.classification_metrics`); ``excluded`` counts the images with a
    label outside the model's."""
    if data.mirrored:
        raise ValueError("evaluate on data prepared without mirror=True")
    keep = data.y_all >= 0
    y_pred = predict_labels(estimator, data)
    metrics = classification_metrics(data.y_all[keep], y_pred[keep], list(data.labels))
    metrics["excluded"] = int((~keep).sum())
    return metrics


def summary_row(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The headline figures of a metrics dict (accuracy, accuracy_on_faces, coverage, macro_f1)."""
    return {f"{prefix}{k}": round(float(metrics[k]), 4) for k in ("accuracy", "accuracy_on_faces", "coverage", "macro_f1")}


def search(
    spec: ExpressionSpec,
    grid: Mapping[str, Sequence[Any]],
    train_data: FeatureData,
    val_data: FeatureData,
    extra: Mapping[str, FeatureData] | None = None,
) -> Any:
    """Fit ``spec`` for every combination of ``grid`` (pipeline options, ``class_balance``) on
    ``train_data`` (mirrored or not, as prepared); a pandas DataFrame with
    the options, the validation figures (and ``<name>_macro_f1`` for each ``extra`` data set) and
    the fit time, best validation macro-F1 first."""
    import pandas as pd

    keys = list(grid)
    rows = []
    for values in itertools.product(*(grid[k] for k in keys)):
        options = dict(zip(keys, values))
        start = time.perf_counter()
        variant = spec.with_options(options)
        model = fit(build(variant), train_data, variant.class_balance)
        row: dict[str, Any] = {**options, **summary_row(evaluate(model, val_data))}
        for name, data in (extra or {}).items():
            row[f"{name}_macro_f1"] = round(evaluate(model, data)["macro_f1"], 4)
        row["fit_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
    return pd.DataFrame(rows).sort_values("macro_f1", ascending=False, ignore_index=True)


def comparison_frame(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Any:
    """One row per approach from ``{approach: {"validation": metrics, "photos": metrics, "unseen":
    metrics}}`` (photos and unseen optional): accuracy (every image), accuracy on faces, coverage,
    macro-F1, then the photos' and the unseen validation images' accuracy and macro-F1."""
    import pandas as pd

    rows = []
    for name, by_split in results.items():
        row: dict[str, Any] = {"approach": name, **summary_row(by_split["validation"])}
        if "photos" in by_split:
            row["photos_macro_f1"] = round(float(by_split["photos"]["macro_f1"]), 4)
            row["photos_accuracy"] = round(float(by_split["photos"]["accuracy"]), 4)
        if "unseen" in by_split:
            row["unseen_accuracy"] = round(float(by_split["unseen"]["accuracy"]), 4)
            row["unseen_macro_f1"] = round(float(by_split["unseen"]["macro_f1"]), 4)
        rows.append(row)
    return pd.DataFrame(rows).set_index("approach")


def per_class_frame(metrics: Mapping[str, Any]) -> Any:
    """The per-class precision, recall, F1 and support of a metrics dict as a DataFrame."""
    import pandas as pd

    return pd.DataFrame(metrics["per_class"]).T[["precision", "recall", "f1", "support"]]


# ------------------------------------------------------------------------------------------------
# The recipe behind ``meshfer train``


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: float(metrics[k]) for k in ("accuracy", "accuracy_on_faces", "coverage", "macro_f1")}
    out.update(n_images=int(metrics["n_images"]), n_faces=int(metrics["n_faces"]))
    out["per_class_f1"] = {label: row["f1"] for label, row in metrics["per_class"].items()}
    return out


def train(name: str, config: Any) -> Any:
    """Train, evaluate and save expression model ``name`` (a key of :data:`EXPRESSION_MODELS`).

    Fits on ``config.train_dir`` and reports on ``config.val_dir`` (or on a 10 % group split of
    the training folder when there is none, fitting on the other 90 %). Training images that are
    byte-identical to a validation image are left out of training (FER-2013 train holds 351 copies
    of 280 validation images), so every validation image is one the model has not seen. Options
    (``--option key=value``): ``photos_dir`` (a second labelled folder reported as
    ``<folder name>_macro_f1``, e.g. ``muxspace_macro_f1``), ``exclude_copies`` (default true;
    false keeps the copies in training), ``mirror``, ``feature_set``, ``kind`` and any pipeline
    option (e.g. ``C``, ``n_components``).
    """
    from ..datasets import group_split
    from ..models.export import save_onnx_model
    from . import leave_out_copies, load_meshes
    from . import short_path as _short

    if name not in EXPRESSION_MODELS:
        raise KeyError(f"no expression recipe {name!r}; valid: {', '.join(EXPRESSION_MODELS)}")
    options = dict(config.options)
    photos_dir = options.pop("photos_dir", None)
    photos_name = options.pop("photos_name", None)
    exclude_copies = as_bool(options.pop("exclude_copies", True))
    spec = EXPRESSION_MODELS[name].with_options(options)

    train_table = load_meshes(config.train_dir, config)
    train_folder = train_table  # unseen_* leave out the copies of any image of the folder, trained on or not
    labels = tuple(train_table.label_names)
    left_out = 0
    if config.val_dir is not None:
        val_table = load_meshes(config.val_dir, config)
        val_source = _short(config.val_dir)
        if exclude_copies:
            train_table, left_out = leave_out_copies(train_table, val_table)
    else:
        fit_rows, val_rows = group_split(train_table.groups, 0.1, seed=config.seed, stratify=train_table.labels)
        train_table, val_table = train_table.subset(fit_rows), train_table.subset(val_rows)
        val_source = f"10% group split of {_short(config.train_dir)} (seed {config.seed})"

    train_data = prepare(train_table, spec.feature_set, labels, mirror=spec.mirror)
    start = time.perf_counter()
    model = fit(build(spec, random_state=config.seed), train_data, spec.class_balance)
    fit_s = time.perf_counter() - start

    val_metrics = evaluate(model, prepare(val_table, spec.feature_set, labels))
    metrics: dict[str, Any] = _headline(val_metrics)
    if config.val_dir is not None:
        metrics.update(_unseen(model, val_table, train_folder, spec.feature_set, labels))
    training_data = {
        "train_dir": _short(config.train_dir),
        "train_images": len(train_table),
        "left_out_copies_of_validation_images": left_out,
        "train_faces": int(train_table.found.sum()),
        "mirrored": spec.mirror,
        "class_balance": spec.class_balance,
        "limit_per_class": config.limit_per_class,
        "seed": config.seed,
        "validation": val_source,
        "note": "metrics: every validation image counted (no face found = wrong); the validation set "
        "was also used to choose the model's options; unseen_*: the validation images that are not "
        "byte-identical copies of an image of the training folder (the same images for every model, whether "
        "or not the copies were left out of training)",
    }
    if photos_dir is not None:
        photos_table = load_meshes(Path(photos_dir), config)
        photos_metrics = evaluate(model, prepare(photos_table, spec.feature_set, labels))
        tag = photos_name or _photos_tag(Path(photos_dir))
        metrics[f"{tag}_macro_f1"] = float(photos_metrics["macro_f1"])
        metrics[f"{tag}_accuracy"] = float(photos_metrics["accuracy"])
        metrics[f"{tag}_coverage"] = float(photos_metrics["coverage"])
        training_data["photos"] = _short(photos_dir)

    check = prepare(val_table.subset(np.arange(min(len(val_table), 300))), spec.feature_set, labels).x
    card = save_onnx_model(
        model, config.output_dir, name=name, task="expression", feature_set=spec.feature_set,
        check_features=check if len(check) else train_data.x[:300], labels=labels,
        default=config.default, description=spec.description, training_data=training_data, metrics=metrics,
        landmarker_sha256=str(train_table.meta.get("landmarker_sha256", "")),
        extra={"kind": spec.kind, "params": dict(spec.params), "fit_seconds": round(fit_s, 1)},
        overwrite=config.overwrite,
        dtype=np.float32,  # half the size of float64; the export check bounds the difference
    )
    return card


def _unseen(model: Any, val_table: Any, train_table: Any, feature_set: str, labels: Sequence[str]) -> dict[str, Any]:
    """Headline metrics on the validation images that are not byte-identical copies of images of
    ``train_table`` (the whole training folder; see :func:`meshfer.evaluation.unseen_metrics`)."""
    from ..datasets import copies_of
    from ..evaluation import unseen_summary

    copies = copies_of(val_table.paths, train_table.paths)
    m = evaluate(model, prepare(val_table.subset(np.flatnonzero(~copies)), feature_set, labels))
    return unseen_summary(m, int(copies.sum()))


def _photos_tag(path: Path) -> str:
    """Metric prefix of a photos folder: its name up to the first '-' (muxspace-dev -> muxspace)."""
    tag = path.name.split("-")[0].replace(" ", "_").lower()
    return tag or "photos"
