"""The scikit-learn pipelines of the expression classifiers, built by name.

Every pipeline holds all of its transforms (scaler, PCA) so that fitting it on the training
split fits everything on training data only, and every one converts to ONNX (skl2onnx) for the
lean prediction path. Probabilities of the SVM come from a sigmoid calibration of its decision
function (``CalibratedClassifierCV(SVC(), ensemble=False)``: ``SVC(probability=True)`` is
deprecated since scikit-learn 1.9); :func:`fit_pipeline` gives the calibration group-aware folds.

Not here, though measured: HistGradientBoostingClassifier (about +1.5 points of validation accuracy
in a vote with the MLPs) does not convert with skl2onnx 1.20 (it writes a Python bool into an
integer attribute), and GradientBoostingClassifier takes over half an hour to fit on one core.

Needs scikit-learn (a training extra), imported on first use.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "PIPELINES",
    "build_pipeline",
    "svm_pipeline",
    "logreg_pipeline",
    "mlp_pipeline",
    "mlp_ensemble_pipeline",
    "random_forest_pipeline",
    "class_weights",
    "fit_pipeline",
    "clamp_pca",
]


def _pipeline(n_components: int | None, random_state: int, final: tuple[str, Any]) -> Any:
    """StandardScaler -> PCA (left out when ``n_components`` is None: skl2onnx cannot convert a
    'passthrough' step) -> ``final``."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, Any]] = [("scale", StandardScaler())]
    if n_components:
        steps.append(("pca", PCA(n_components=n_components, random_state=random_state)))
    return Pipeline([*steps, final])


def svm_pipeline(
    n_components: int | None = 50,
    C: float = 5.0,
    gamma: float | str = "scale",
    class_weight: str | None = None,
    calibration_folds: int = 3,
    random_state: int = 0,
) -> Any:
    """StandardScaler -> PCA(n_components) -> RBF SVC with sigmoid-calibrated probabilities.

    ``n_components`` None skips the PCA. ``calibration_folds`` 0 leaves the bare SVC (no
    ``predict_proba``; for quick searches only)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    svc = SVC(kernel="rbf", C=C, gamma=gamma, class_weight=class_weight, random_state=random_state)
    final = CalibratedClassifierCV(svc, method="sigmoid", cv=calibration_folds, ensemble=False) if calibration_folds else svc
    return _pipeline(n_components, random_state, ("svm", final))


def logreg_pipeline(
    n_components: int | None = None, C: float = 1.0, class_weight: str | None = None, max_iter: int = 3000,
    random_state: int = 0,
) -> Any:
    """StandardScaler -> (PCA) -> multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter, random_state=random_state)
    return _pipeline(n_components, random_state, ("logreg", clf))


def _mlp(hidden: Sequence[int], alpha: float, max_iter: int, random_state: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    # A fixed number of epochs instead of early stopping: scikit-learn's early-stopping split is
    # not group-aware and would hold out mirrored twins of training faces.
    return MLPClassifier(
        hidden_layer_sizes=tuple(hidden), alpha=alpha, batch_size="auto", learning_rate_init=1e-3,
        max_iter=max_iter, n_iter_no_change=max_iter, tol=0.0, random_state=random_state,
    )


def _vote(members: list[tuple[str, Any]], weights: Sequence[float] | None = None) -> Any:
    """Soft voting (weighted mean of the members' probabilities) in the form skl2onnx converts:
    ``flatten_transform=False`` and the weights as an array."""
    from sklearn.ensemble import VotingClassifier

    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    return VotingClassifier(members, voting="soft", weights=w, flatten_transform=False)


def mlp_pipeline(
    n_components: int | None = 150, hidden: Sequence[int] = (256,), alpha: float = 1e-2, max_iter: int = 60,
    random_state: int = 0,
) -> Any:
    """StandardScaler -> (PCA) -> a multi-layer perceptron (ReLU, Adam)."""

    return _pipeline(n_components, random_state, ("mlp", _mlp(hidden, alpha, max_iter, random_state)))


def mlp_ensemble_pipeline(
    n_components: int | None = 150, hidden: Sequence[int] = (256,), alpha: float = 1e-2, max_iter: int = 60,
    n_members: int = 5, random_state: int = 0,
) -> Any:
    """StandardScaler -> (PCA) -> the soft vote (mean probabilities) of ``n_members`` MLPs that
    differ only in their random initialisation and batch order."""
    members = [(f"mlp{k}", _mlp(hidden, alpha, max_iter, random_state + k)) for k in range(n_members)]
    return _pipeline(n_components, random_state, ("vote", _vote(members)))


def random_forest_pipeline(
    n_components: int | None = 50, n_estimators: int = 300, min_samples_leaf: int = 2, max_depth: int | None = None,
    class_weight: str | None = None, random_state: int = 0,
) -> Any:
    """StandardScaler -> (PCA) -> a random forest (for comparison: large files, not shipped)."""
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(
        n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, max_depth=max_depth,
        class_weight=class_weight, n_jobs=1, random_state=random_state,
    )
    return _pipeline(n_components, random_state, ("forest", clf))


#: Pipeline kind -> builder; the keyword arguments of each builder are the kind's options.
PIPELINES: dict[str, Callable[..., Any]] = {
    "svm": svm_pipeline,
    "logreg": logreg_pipeline,
    "mlp": mlp_pipeline,
    "mlp_ensemble": mlp_ensemble_pipeline,
    "random_forest": random_forest_pipeline,
}


def build_pipeline(kind: str, **params: Any) -> Any:
    """A fresh, unfitted pipeline of ``kind`` (see :data:`PIPELINES`) with ``params``."""
    try:
        builder = PIPELINES[kind]
    except KeyError:
        raise KeyError(f"unknown pipeline kind {kind!r}; valid: {', '.join(sorted(PIPELINES))}") from None
    return builder(**params)


def class_weights(y: np.ndarray, power: float = 1.0) -> np.ndarray:
    """Per-sample weights (mean 1) that counter class imbalance: class c gets
    ``(n_largest / n_c) ** power`` (0: no reweighting, 1: 'balanced', 0.5: half way on a log scale)."""
    y = np.asarray(y)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    w = (counts.max() / counts) ** float(power)
    sample = w[inverse]
    return sample / sample.mean()


def clamp_pca(pipeline: Any, shape: tuple[int, ...], say: Callable[[str], None] | None = None) -> int | None:
    """Lower the width of ``pipeline``'s PCA step to what data of ``shape`` (samples, features)
    allows (``min(n_samples, n_features)``), saying so (``say``, default: print); returns the width
    used, None without a PCA step. A few images per class then fit instead of failing."""
    steps = dict(getattr(pipeline, "steps", []))
    pca = steps.get("pca")
    if pca is None or not isinstance(pca.n_components, (int, np.integer)):
        return None
    limit = int(min(shape[0], shape[1])) if len(shape) == 2 else int(pca.n_components)
    if pca.n_components > limit:
        (say or print)(f"PCA width {pca.n_components} lowered to {limit}: the data has {shape[0]} samples "
                       f"and {shape[1]} features")
        pca.set_params(n_components=max(1, limit))
    return int(pca.n_components)


def fit_pipeline(
    pipeline: Any,
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
) -> Any:
    """Fit ``pipeline`` on (x, y) and return it. With ``groups``, any internal cross-validation
    (the SVM's probability calibration) uses folds that keep each group on one side.
    ``sample_weight`` goes to the final step (and from a vote to each of its members)."""
    if groups is not None:
        from sklearn.model_selection import StratifiedGroupKFold

        for name, value in pipeline.get_params().items():
            if name.endswith("__cv") and isinstance(value, int):
                # A fixed list of folds: CalibratedClassifierCV cannot be handed groups otherwise.
                folds = StratifiedGroupKFold(n_splits=value, shuffle=True, random_state=0)
                pipeline.set_params(**{name: list(folds.split(x, y, np.asarray(groups)))})
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    clamp_pca(pipeline, np.shape(x))
    fit_params = {} if sample_weight is None else {f"{pipeline.steps[-1][0]}__sample_weight": sample_weight}
    with warnings.catch_warnings():
        # The MLPs train for a fixed number of epochs on purpose (tol=0): "not converged" is expected.
        warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn.neural_network")
        return pipeline.fit(x, y, **fit_params)
