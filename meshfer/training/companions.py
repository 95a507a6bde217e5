"""The companion models: per-eye state (``eyes``), mouth state (``mouth``) and gaze (``gaze``).

Eye and mouth models learn from label folders (``eye_<label>/``, ``mouth_<label>/``), typically
written by ``meshfer sort`` and reviewed by a person. Given a folder without such label folders
(e.g. FER-2013 train with its ``face_<label>`` folders), they learn from the labels that
``meshfer sort`` would propose, leaving the unsure images out - the same result as sorting into
folders and training on them unreviewed, without copying anything. The shipped models were made
that way from FER-2013 train.

The gaze model needs no labels: its targets come from MediaPipe's eye-look blendshapes
(:func:`gaze_targets`) and it learns them from landmark geometry.

Held-out figures come from a 90/10 split by group (:func:`meshfer.datasets.group_split`), or from
the ``--val`` folder when given; the shipped model is the one fitted on the 90 %.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MeshferError
from ..meshtable import MeshTable
from ..sorting import EYE_LABELS, KINDS, MOUTH_LABELS, UNSURE, propose_labels
from . import short_path as _short

__all__ = [
    "EYE_FEATURE_SET",
    "MOUTH_FEATURE_SET",
    "GAZE_FEATURE_SET",
    "GAZE_TARGETS",
    "GAZE_RANGE",
    "DEFAULT_MODELS",
    "gaze_targets",
    "eye_classifiers",
    "mouth_classifiers",
    "gaze_regressors",
    "labelled_meshes",
    "ensure_label_folders",
    "eye_feature_frame",
    "mouth_feature_frame",
    "eye_samples",
    "mouth_samples",
    "cap_per_class",
    "regression_metrics",
    "read_handcheck",
    "handcheck_agreement",
    "handcheck_shipped",
    "train_eyes",
    "train_mouth",
    "train_gaze",
]

EYE_FEATURE_SET = "eye_state"
MOUTH_FEATURE_SET = "mouth_state"
GAZE_FEATURE_SET = "gaze_eye_region"
GAZE_TARGETS = ("x", "y")
#: Both gaze targets lie in [-1, 1] by definition; predictions are clipped to it.
GAZE_RANGE = (-1.0, 1.0)
#: The recipes' default candidates: the best held-out accuracy in the Eye/Mouth Closeness
#: notebooks, ties going to the reference design (SVC, degree-3 polynomial kernel).
DEFAULT_MODELS = {"eyes": "svc_rbf", "mouth": "svc_poly3", "gaze": "bayesian_ridge"}


def gaze_targets(blendshapes: np.ndarray) -> np.ndarray:
    """(N, 2) gaze targets from the eye-look blendshapes (sides are the subject's):

    x = (eyeLookOutLeft + eyeLookInRight - eyeLookInLeft - eyeLookOutRight) / 2 - positive when the
    eyes turn towards the subject's left (the right of an unmirrored photo);
    y = (eyeLookUpLeft + eyeLookUpRight - eyeLookDownLeft - eyeLookDownRight) / 2 - positive up.
    Both lie in [-1, 1].
    """
    from ..landmarks import BLENDSHAPE_NAMES

    bs = np.asarray(blendshapes, dtype=np.float32).reshape(-1, len(BLENDSHAPE_NAMES))
    col = {name: bs[:, i] for i, name in enumerate(BLENDSHAPE_NAMES)}
    x = (col["eyeLookOutLeft"] + col["eyeLookInRight"] - col["eyeLookInLeft"] - col["eyeLookOutRight"]) / 2
    y = (col["eyeLookUpLeft"] + col["eyeLookUpRight"] - col["eyeLookDownLeft"] - col["eyeLookDownRight"]) / 2
    return np.stack([x, y], axis=1)


# ------------------------------------------------------------------------------------------------
# Candidate pipelines


def _svc(kernel: str, seed: int) -> Any:
    """An SVC with calibrated probabilities (Platt scaling on 5-fold decision values; what
    ``SVC(probability=True)`` did before scikit-learn 1.9 deprecated it)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    svc = SVC(kernel=kernel, degree=3, gamma="scale", C=1.0, random_state=seed)
    return CalibratedClassifierCV(svc, method="sigmoid", cv=5, ensemble=False)


def eye_classifiers(seed: int = 0) -> dict[str, Any]:
    """Per-eye candidates: StandardScaler + SVC with a degree-3 polynomial kernel (the reference
    design's final model), + RBF SVC, + logistic regression (see :data:`DEFAULT_MODELS`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "svc_poly3": make_pipeline(StandardScaler(), _svc("poly", seed)),
        "svc_rbf": make_pipeline(StandardScaler(), _svc("rbf", seed)),
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
    }


def mouth_classifiers(seed: int = 0) -> dict[str, Any]:
    """Mouth candidates: the same three pipelines as :func:`eye_classifiers`."""
    return eye_classifiers(seed)


def gaze_regressors() -> dict[str, Any]:
    """Gaze candidates, each predicting (x, y): StandardScaler + BayesianRidge per target (the
    reference's final and the default), + linear regression, + ridge, + 10-nearest-neighbours."""
    from sklearn.linear_model import BayesianRidge, LinearRegression, Ridge
    from sklearn.multioutput import MultiOutputRegressor
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "bayesian_ridge": make_pipeline(StandardScaler(), MultiOutputRegressor(BayesianRidge())),
        "linear": make_pipeline(StandardScaler(), LinearRegression()),
        "ridge": make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
        "knn": make_pipeline(StandardScaler(), KNeighborsRegressor(n_neighbors=10)),
    }


# ------------------------------------------------------------------------------------------------
# Data


def labelled_meshes(
    kind: str,
    directory: str | Path,
    *,
    cache_dir: str | Path | None = None,
    per_class: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    options: Any = None,
    progress: bool = True,
) -> MeshTable:
    """Face meshes of ``directory`` labelled for ``kind`` ('eyes' or 'mouth'): only rows with a
    face, ``labels`` holding the kind's label names and ``meta["labels"]`` their order.

    With ``eye_<label>``/``mouth_<label>`` folders the folder names are the labels
    (``meta["label_source"] = "folders"``); otherwise the images (``face_<label>`` folders or any
    folder of images) get the labels :func:`meshfer.sorting.propose_labels` proposes, unsure
    ones dropped (``"sorter"``). ``per_class`` limits the images per folder (a reproducible sample).
    """
    from ..datasets import EXPRESSION_PREFIX, scan_paths
    from ..extract import cache_file, extract, extract_folder

    prefix, labels = KINDS[kind]
    directory = Path(directory)
    if not directory.is_dir():
        raise MeshferError(f"{directory}: no such folder")
    subfolders = [c.name for c in directory.iterdir() if c.is_dir()]
    common = dict(per_class=per_class, seed=seed, workers=workers, options=options, progress=progress)
    if any(name.startswith(prefix) for name in subfolders):
        table = extract_folder(directory, cache_dir, prefix=prefix, **common).faces()
        unknown = sorted(set(map(str, table.labels)) - set(labels))
        if unknown:
            raise MeshferError(f"{directory}: unknown {kind} label folders {unknown}; valid: {list(labels)}")
        return replace(table, meta={**table.meta, "labels": list(labels), "label_source": "folders"})
    if any(name.startswith(EXPRESSION_PREFIX) for name in subfolders):
        table = extract_folder(directory, cache_dir, **common)
    else:
        output = cache_file(directory, cache_dir) if cache_dir is not None else None
        table = extract(scan_paths([directory]), output, workers=workers, options=options, progress=progress)
    table = table.faces()
    proposed, _ = propose_labels(kind, table)
    keep = proposed != UNSURE
    return replace(
        table.subset(keep),
        labels=proposed[keep].astype(str),
        meta={**table.meta, "labels": list(labels), "label_source": "sorter"},
    )


def ensure_label_folders(
    kind: str,
    folder: str | Path,
    source: str | Path,
    *,
    cache_dir: str | Path | None = None,
    per_class: int | None = None,
    seed: int = 0,
    workers: int | None = None,
) -> Any:
    """Label folders for the notebooks: when ``folder`` does not exist, sort (a ``per_class``
    sample of) ``source`` into it with :func:`meshfer.sorting.sort_images` and return the
    SortResult; an existing folder is left as it is (None)."""
    from ..sorting import sort_images

    if Path(folder).exists():
        return None
    return sort_images(
        kind, source, folder, cache_dir=cache_dir, per_class=per_class, seed=seed, workers=workers,
        progress=False, on_problem=None,
    )


def eye_feature_frame(table: MeshTable) -> Any:
    """A pandas DataFrame with one row per eye of a labelled table: path, group, label, side
    (the subject's left or right) and the :data:`meshfer.features.EYE_STATE_FEATURE_NAMES`."""
    import pandas as pd

    from ..features import EYE_STATE_FEATURE_NAMES

    x, _, groups = eye_samples(table)
    frame = pd.DataFrame(x, columns=list(EYE_STATE_FEATURE_NAMES))
    frame.insert(0, "side", np.tile(["left", "right"], len(table)))
    frame.insert(0, "label", np.repeat(np.asarray(table.labels, dtype=str), 2))
    frame.insert(0, "group", groups)
    frame.insert(0, "path", np.repeat(np.asarray(table.paths, dtype=str), 2))
    return frame


def mouth_feature_frame(table: MeshTable) -> Any:
    """A pandas DataFrame with one row per image of a labelled table: path, group, label and the
    :data:`meshfer.features.MOUTH_STATE_FEATURE_NAMES`."""
    import pandas as pd

    from ..features import MOUTH_STATE_FEATURE_NAMES

    x, _, groups = mouth_samples(table)
    frame = pd.DataFrame(x, columns=list(MOUTH_STATE_FEATURE_NAMES))
    frame.insert(0, "label", np.asarray(table.labels, dtype=str))
    frame.insert(0, "group", groups)
    frame.insert(0, "path", np.asarray(table.paths, dtype=str))
    return frame


def eye_samples(table: MeshTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-eye training rows of a labelled table: features (2N, k) of :data:`EYE_FEATURE_SET`
    (left eye, right eye, ...), labels (2N,) as indices of :data:`EYE_LABELS` (an image's label is
    both eyes' state), and groups (2N,) so that a split keeps both eyes of an image together."""
    from ..features import compute

    x = compute(EYE_FEATURE_SET, table.landmarks, table.blendshapes, table.image_sizes)
    y = np.repeat([EYE_LABELS.index(str(label)) for label in table.labels], 2).astype(np.int64)
    return x, y, np.repeat(table.groups, 2)


def mouth_samples(table: MeshTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows of a labelled table: features (N, k) of :data:`MOUTH_FEATURE_SET`, labels as
    indices of :data:`MOUTH_LABELS`, groups."""
    from ..features import compute

    x = compute(MOUTH_FEATURE_SET, table.landmarks, table.blendshapes, table.image_sizes)
    y = np.array([MOUTH_LABELS.index(str(label)) for label in table.labels], dtype=np.int64)
    return x, y, np.asarray(table.groups)


def cap_per_class(y: np.ndarray, indices: np.ndarray, cap: int | None, seed: int = 0) -> np.ndarray:
    """At most ``cap`` of ``indices`` per class of ``y`` (a reproducible random choice; keeps the
    SVC fits short), sorted."""
    indices = np.asarray(indices)
    if cap is None:
        return np.sort(indices)
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y[indices]):
        members = indices[y[indices] == c]
        out.append(members if len(members) <= cap else rng.choice(members, cap, replace=False))
    return np.sort(np.concatenate(out))


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, targets: tuple[str, ...] = GAZE_TARGETS) -> dict[str, float]:
    """MSE and R² per target column: ``{"mse_x": ..., "r2_x": ..., "mse_y": ..., "r2_y": ...}``."""
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    out: dict[str, float] = {}
    for k, name in enumerate(targets):
        err = y_true[:, k] - y_pred[:, k]
        var = float(np.var(y_true[:, k]))
        out[f"mse_{name}"] = float(np.mean(err**2))
        out[f"r2_{name}"] = float(1.0 - np.mean(err**2) / var) if var > 0 else float("nan")
    return out


# ------------------------------------------------------------------------------------------------
# Recipes


def _split_tables(kind: str, config: Any) -> tuple[MeshTable, MeshTable, dict[str, Any]]:
    """(train, held-out, description) for a classifier recipe."""
    from ..datasets import group_split

    common = dict(cache_dir=config.cache_dir, per_class=config.limit_per_class, seed=config.seed, workers=config.workers)
    options = _landmarker_options(config)
    table = labelled_meshes(kind, config.train_dir, options=options, **common)
    if len(table) == 0:
        raise MeshferError(f"{config.train_dir}: no labelled faces for the {kind} model")
    if config.val_dir is not None:
        held = labelled_meshes(kind, config.val_dir, options=options, **common)
        split = f"validation folder {_short(config.val_dir)}"
        train = table
    else:
        test_size = float(config.options.get("test_size", 0.1))
        tr, te = group_split(table.groups, test_size, seed=config.seed, stratify=table.labels)
        train, held = table.subset(tr), table.subset(te)
        split = f"{1 - test_size:.0%}/{test_size:.0%} split by group (seed {config.seed})"
    info = {
        "source": _short(config.train_dir),
        "labels_from": table.meta["label_source"],
        "held_out": split,
        "n_train_images": len(train),
        "n_held_out_images": len(held),
        "train_counts": {label: int((train.labels == label).sum()) for label in table.meta["labels"]},
    }
    return train, held, info


def _landmarker_options(config: Any) -> Any:
    from ..landmarks import LandmarkerOptions

    return LandmarkerOptions(model_path=config.landmarker)


def _fit_classifier(kind: str, name: str, config: Any) -> Any:
    from ..evaluation import classification_metrics
    from ..models.export import save_onnx_model

    train, held, info = _split_tables(kind, config)
    labels = EYE_LABELS if kind == "eyes" else MOUTH_LABELS
    samples = eye_samples if kind == "eyes" else mouth_samples
    x_tr, y_tr, _ = samples(train)
    x_te, y_te, _ = samples(held)
    missing = [labels[i] for i in range(len(labels)) if not (y_tr == i).any()]
    if missing:
        raise MeshferError(f"no training images for {kind} label(s) {missing}; add some or use more data")
    choice = str(config.options.get("model", DEFAULT_MODELS[kind]))
    candidates = eye_classifiers(config.seed) if kind == "eyes" else mouth_classifiers(config.seed)
    if choice not in candidates:
        raise MeshferError(f"unknown model option {choice!r}; valid: {', '.join(candidates)}")
    cap = config.options.get("max_per_class", 3000 if kind == "eyes" else 5000)
    rows = cap_per_class(y_tr, np.arange(len(y_tr)), None if cap in (None, "none", 0) else int(cap), config.seed)
    pipeline = candidates[choice].fit(x_tr[rows], y_tr[rows])
    metrics: dict[str, Any] = {}
    if len(y_te):
        pred = pipeline.predict_proba(x_te).argmax(axis=1)
        metrics = classification_metrics(y_te, pred, labels)
        metrics.pop("coverage", None)
        metrics.pop("accuracy_on_faces", None)
        positive = labels.index("closed") if kind == "eyes" else labels.index("open")
        key = "closed_vs_not_accuracy" if kind == "eyes" else "open_vs_closed_accuracy"
        metrics[key] = float(np.mean((pred == positive) == (y_te == positive)))
    unit = "eyes" if kind == "eyes" else "images"
    info.update({"n_train_rows": int(len(rows)), "rows_are": unit, "max_per_class": cap})
    task = "eye" if kind == "eyes" else "mouth"
    what = (
        "State of each eye (closed, narrowed, open, wide), one eye at a time"
        if kind == "eyes"
        else "Mouth open or closed (open: lips apart)"
    )
    description = (
        f"{what}: StandardScaler + {choice} on the '{_feature_set(kind)}' features. Trained on "
        f"{_short(config.train_dir)} with labels "
        + ("from its label folders" if info["labels_from"] == "folders" else "proposed by 'meshfer sort' (unsure images left out)")
        + f"; metrics on the held-out {info['held_out']}"
        + (
            ", whose labels are the sorter's clear cases, so they are near perfect by construction (agreement "
            "with a person on real photos: see the README)."
            if info["labels_from"] == "sorter"
            else "."
        )
    )
    with warnings.catch_warnings():  # skl2onnx reads SVC attributes that scikit-learn 1.9 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        return save_onnx_model(
            pipeline, config.output_dir, name=name, task=task, feature_set=_feature_set(kind),
            check_features=x_te[:400] if len(x_te) else x_tr[:400], labels=labels, default=config.default,
            description=description, training_data=info, metrics=metrics,
            landmarker_sha256=str(train.meta.get("landmarker_sha256", "")),
            extra={"model_option": choice, "sort_rules": _rules(kind)}, overwrite=config.overwrite,
        )


def _feature_set(kind: str) -> str:
    return EYE_FEATURE_SET if kind == "eyes" else MOUTH_FEATURE_SET


def _rules(kind: str) -> dict[str, Any]:
    from dataclasses import asdict

    from ..sorting import EyeRules, MouthRules

    return asdict(EyeRules() if kind == "eyes" else MouthRules())


def train_eyes(name: str, config: Any) -> Any:
    """Recipe ``eyes``: per-eye state classifier (task ``eye``). Options: ``model``
    (svc_rbf, the default | svc_poly3 | logistic), ``max_per_class`` (eye rows per class, default 3000),
    ``test_size`` (default 0.1)."""
    return _fit_classifier("eyes", name, config)


def train_mouth(name: str, config: Any) -> Any:
    """Recipe ``mouth``: mouth open/closed classifier (task ``mouth``). Options as for
    :func:`train_eyes` (``model`` default svc_poly3; ``max_per_class`` default 5000 images)."""
    return _fit_classifier("mouth", name, config)


def train_gaze(name: str, config: Any) -> Any:
    """Recipe ``gaze``: gaze regressor (task ``gaze``, targets x and y from :func:`gaze_targets`)
    on the ``gaze_eye_region`` features. Options: ``model`` (bayesian_ridge | linear | ridge |
    knn), ``feature_set`` (default gaze_eye_region), ``test_size`` (default 0.1)."""
    from ..datasets import group_split
    from ..features import compute
    from ..models.export import save_onnx_model
    from ..training import load_meshes

    table = load_meshes(Path(config.train_dir), config).faces()
    if len(table) < 10:
        raise MeshferError(f"{config.train_dir}: too few faces ({len(table)}) for the gaze model")
    feature_set = str(config.options.get("feature_set", GAZE_FEATURE_SET))
    x = compute(feature_set, table.landmarks, table.blendshapes, table.image_sizes)
    y = gaze_targets(table.blendshapes)
    if config.val_dir is not None:
        held = load_meshes(Path(config.val_dir), config).faces()
        tr, x_te, y_te = np.arange(len(table)), None, None
        x_te = compute(feature_set, held.landmarks, held.blendshapes, held.image_sizes)
        y_te = gaze_targets(held.blendshapes)
        split = f"validation folder {_short(config.val_dir)}"
    else:
        test_size = float(config.options.get("test_size", 0.1))
        tr, te = group_split(table.groups, test_size, seed=config.seed)
        x_te, y_te = x[te], y[te]
        split = f"{1 - test_size:.0%}/{test_size:.0%} split by group (seed {config.seed})"
    choice = str(config.options.get("model", DEFAULT_MODELS["gaze"]))
    candidates = gaze_regressors()
    if choice not in candidates:
        raise MeshferError(f"unknown model option {choice!r}; valid: {', '.join(candidates)}")
    pipeline = candidates[choice].fit(x[tr], y[tr])
    metrics: dict[str, Any] = {}
    if len(y_te):
        raw = pipeline.predict(x_te)
        # What users get: the Predictor clips to the targets' range (card extra "output_range").
        metrics = regression_metrics(y_te, np.clip(raw, *GAZE_RANGE))
        metrics["unclipped"] = regression_metrics(y_te, raw)
    info = {
        "source": _short(config.train_dir),
        "targets_from": "blendshapes: x = (eyeLookOutLeft + eyeLookInRight - eyeLookInLeft - eyeLookOutRight) / 2, "
        "y = (eyeLookUpLeft + eyeLookUpRight - eyeLookDownLeft - eyeLookDownRight) / 2",
        "held_out": split,
        "n_train_images": int(len(tr)),
        "n_held_out_images": int(len(y_te)),
    }
    description = (
        f"Gaze direction (x: + towards the subject's left, i.e. the right of an unmirrored photo; y: + up), "
        f"StandardScaler + {choice} on the '{feature_set}' landmark features. Trained on "
        f"{_short(config.train_dir)} with targets from MediaPipe's eye-look blendshapes; predictions are clipped "
        f"to [-1, 1], the targets' range; metrics (of the clipped predictions) on the held-out {split}."
    )
    return save_onnx_model(
        pipeline, config.output_dir, name=name, task="gaze", feature_set=feature_set,
        check_features=x_te[:400], targets=GAZE_TARGETS, default=config.default, description=description,
        training_data=info, metrics=metrics, landmarker_sha256=str(table.meta.get("landmarker_sha256", "")),
        extra={"model_option": choice, "output_range": list(GAZE_RANGE)}, overwrite=config.overwrite,
    )


# ------------------------------------------------------------------------------------------------
# Agreement with a person on real photos


def read_handcheck(csv_path: str | Path, photos_dir: str | Path) -> tuple[list[dict[str, str]], list[Path]]:
    """Rows of a hand-checked CSV (``file`` relative to ``photos_dir``; ``eye_left``/``eye_right``
    'closed' | 'not_closed' | '' for the subject's eyes; ``mouth`` 'open' | 'closed' | ''; optional
    ``eyes_unclear``/``mouth_unclear`` 0/1 flags) and the image paths. A missing image is a
    MeshferError naming it."""
    import csv

    photos_dir = Path(photos_dir)
    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    paths = [photos_dir / row["file"] for row in rows]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MeshferError(f"hand-checked images not found: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return rows, paths


def handcheck_agreement(
    rows: list[dict[str, str]], eye_pred: np.ndarray | None = None, mouth_pred: np.ndarray | None = None
) -> dict[str, Any]:
    """How often predictions agree with a person's labels (see :func:`read_handcheck`).

    ``eye_pred`` (N, 2): predicted state of the subject's [left, right] eye (any eye label, or ''
    when no face was found - counted as a disagreement); agreement is on closed vs not closed, per
    eye. ``mouth_pred`` (N,): 'open' / 'closed' / ''. Returns, per part, ``agreement``, ``n``,
    ``agreement_clear`` and ``n_clear`` (leaving out the rows flagged unclear), and the confusion
    counts ``{(truth, predicted): n}``.
    """
    out: dict[str, Any] = {}
    if eye_pred is not None:
        eye_pred = np.asarray(eye_pred, dtype=object).reshape(len(rows), 2)
        truth, pred, clear = [], [], []
        for row, p in zip(rows, eye_pred):
            for k, side in enumerate(("left", "right")):
                t = row.get(f"eye_{side}", "")
                if t:
                    truth.append(t == "closed")
                    pred.append("closed" if p[k] == "closed" else ("not_closed" if p[k] else "no_face"))
                    clear.append(row.get("eyes_unclear", "0") in ("0", ""))
        out["eyes"] = _agreement(np.array(truth), np.array(pred), "closed", np.array(clear))
    if mouth_pred is not None:
        mouth_pred = np.asarray(mouth_pred, dtype=object).reshape(len(rows))
        truth, pred, clear = [], [], []
        for row, p in zip(rows, mouth_pred):
            if row.get("mouth"):
                truth.append(row["mouth"] == "open")
                pred.append(p if p else "no_face")
                clear.append(row.get("mouth_unclear", "0") in ("0", ""))
        out["mouth"] = _agreement(np.array(truth), np.array(pred), "open", np.array(clear))
    return out


def _agreement(truth: np.ndarray, pred: np.ndarray, positive: str, clear: np.ndarray) -> dict[str, Any]:
    agree = (truth == (pred == positive)) & (pred != "no_face")  # no face: no answer, a disagreement
    names = np.where(truth, positive, "not_" + positive if positive == "closed" else "closed")
    confusion: dict[str, int] = {}
    for t, p in zip(names, pred):
        confusion[f"{t} -> {p}"] = confusion.get(f"{t} -> {p}", 0) + 1
    return {
        "agreement": float(agree.mean()) if len(agree) else float("nan"),
        "n": int(len(agree)),
        "agreement_clear": float(agree[clear].mean()) if clear.any() else float("nan"),
        "n_clear": int(clear.sum()),
        "confusion": dict(sorted(confusion.items())),
    }


def handcheck_shipped(
    csv_path: str | Path, photos_dir: str | Path, *, eyes: str | Path = "default", mouth: str | Path = "default",
    meshes: MeshTable | None = None, options: Any = None,
) -> dict[str, Any]:
    """Agreement of the eye and mouth models (shipped defaults unless named) with the hand-checked
    CSV. Meshes come from ``meshes`` (rows matched by image path) when given, else MediaPipe runs on
    each image. Adds ``predictions`` (per row: file, eye_left, eye_right, mouth) to the result."""
    from ..predict import Predictor

    rows, paths = read_handcheck(csv_path, photos_dir)
    eye_pred = np.full((len(rows), 2), "", dtype=object)
    mouth_pred = np.full(len(rows), "", dtype=object)
    with Predictor(expression=None, eyes=eyes, gaze=None, mouth=mouth, landmarker=options) as predictor:
        if meshes is not None:
            index = {str(Path(str(p)).resolve()): i for i, p in enumerate(meshes.paths)}
            results = []
            for path in paths:
                i = index.get(str(path.resolve()))
                mesh = meshes.mesh(i) if i is not None else None
                results.append(predictor.predict_mesh(mesh) if mesh is not None else None)
        else:
            results = [r.prediction if r.face else None for r in predictor.iter_images(paths)]
    for k, pred in enumerate(results):
        if pred is None:
            continue
        if pred.eyes is not None:
            eye_pred[k] = [pred.eyes["left"].label, pred.eyes["right"].label]
        if pred.mouth is not None:
            mouth_pred[k] = pred.mouth.label
    out = handcheck_agreement(rows, eye_pred, mouth_pred)
    out["predictions"] = [
        {"file": row["file"], "eye_left": str(e[0]), "eye_right": str(e[1]), "mouth": str(m)}
        for row, e, m in zip(rows, eye_pred, mouth_pred)
    ]
    return out
