"""The hybrid expression network: a small pixel branch on the mesh-aligned face crop, fused with a
mesh branch on blendshapes and key-point geometry (Keras 2 through ``tf-keras``).

- **Pixel branch**: a 3x3 stem convolution at full resolution, then stages of mobile-style
  residual blocks (depthwise-separable convolutions, batch norm, ReLU, a strided 1x1 shortcut)
  down to 6x6, global average pooling. Input: the crop from :func:`meshfer.crops.standardize`.
- **Mesh branch**: the card's feature set (standardised inside the model) through one dense layer.
- **Fusion**: both embeddings side by side, one dense layer, softmax. ``branches`` "pixels" or
  "mesh" builds one branch alone (the ablations of ``Hybrid/model.ipynb``).

Training (:func:`fit_hybrid`) draws a fresh augmentation of every crop each epoch
(:func:`augment_crops`: mirror with the mirrored mesh, small rotations, scales and shifts,
brightness/contrast/gamma, blur, noise, JPEG artefacts, lower resolution, random erasing), weights
rare classes up, smooths the labels, and stops early on held-out *training* images. The trained
network is exported to ONNX (:mod:`meshfer.models.keras_onnx`) and checked against Keras; prediction
needs only ONNX Runtime (:class:`meshfer.models.onnx.HybridOnnxModel`).

TensorFlow is imported only inside the functions that need it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import features
from .crops import standardize

__all__ = [
    "FORMAT",
    "DEFAULT_HPARAMS",
    "DEFAULT_TRAINING",
    "import_keras",
    "build_hybrid",
    "count_macs",
    "HybridData",
    "prepare_hybrid",
    "augment_crops",
    "epoch_inputs",
    "train_epoch",
    "FitResult",
    "fit_hybrid",
    "fit_members",
    "fit_parallel",
    "FitJob",
    "sample_weights",
    "domain_ratios",
    "adjust_to_domains",
    "predict_hybrid",
    "predict_members",
]

#: The model card ``format`` of an exported hybrid network.
FORMAT = "onnx-hybrid"

#: Architecture (stored in the card's ``extra["hparams"]``).
DEFAULT_HPARAMS: dict[str, Any] = {
    "branches": "fused",  # "fused", "pixels" or "mesh"
    "stem": 24,  # channels of the full-resolution 3x3 stem convolution
    "stages": [48, 96, 192, 256],  # channels of each stage; every stage halves the resolution
    "blocks_per_stage": 1,
    "pixel_dropout": 0.3,
    "mesh_units": 128,
    "mesh_dropout": 0.3,
    "fusion_units": 128,
    "fusion_dropout": 0.3,
    "mesh_drop": 0.25,  # probability of hiding a face's whole mesh embedding in training (modality dropout)
    "aux_pixel_loss": 0.3,  # weight of an extra pixels-only softmax head's loss in training (0: none)
    "l2": 1e-4,
}

#: Training options (``meshfer train hybrid ... --option key=value``).
DEFAULT_TRAINING: dict[str, Any] = {
    "epochs": 64,
    "patience": 10,  # epochs without a better held-out macro-F1 before stopping ...
    "min_epochs": 0.5,  # ... but not before this share of the epochs (the learning rate is still high)
    "batch_size": 128,
    "learning_rate": 3e-3,
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
    "class_weight_power": 0.5,  # weights (n / (k * n_c)) ** power over the training images
    "photo_weight": 1.0,  # sample weight of the photo-domain training images (photos_train_dir)
    # "weight": class weights within every domain; "adjust": class weights in the largest domain
    # (FER-2013) only, and the other domains' faces scored through their own class prior (domain
    # logit adjustment, see domain_ratios), so that a domain's label mix is not learnt as a cue
    "domain_prior": "weight",
    "augment": True,
    "augment_strength": 1.0,  # scales the probabilities and ranges of augment_crops
    "threads": 2,
    "max_minutes": 75,  # stop after the epoch that passes this wall-clock budget (None: no limit)
    "members": 2,  # networks trained with different seeds and averaged (one ONNX graph)
    # momentum of a running average of the weights over epochs (0: none). The average is scored on
    # the held-out images beside the epoch's own weights from min_epochs on; the better one is kept
    "weight_average": 0.0,
    # share of a teacher's probabilities in each face's training target (0: none); the teacher is given
    # to fit_hybrid (meshfer train hybrid: --option teacher=CARD[,CARD...]), the rest is the face's label
    "distill": 0.0,
    "processes": None,  # members trained at once, one process each (None: as many as cores, at most members)
}


def import_keras(threads: int | None = None) -> tuple[Any, Any]:
    """TensorFlow and Keras 2 (``tf_keras``), importing them on first use; ``threads`` sets
    TensorFlow's thread pools when they are not running yet."""
    import os
    import sys

    from .errors import MeshferError

    if "tensorflow" not in sys.modules:
        # Keras 2 for TensorFlow as a whole, so that the GNN (Spektral) works in the same process
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        import tensorflow as tf
        import tf_keras
    except ImportError as exc:
        raise MeshferError(
            f"training the hybrid model needs TensorFlow and tf-keras ({exc}); install them with "
            "pip install 'meshfer[gnn]'"
        ) from None
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # thread pools already running
    return tf, tf_keras


# --------------------------------------------------------------------------------------------------
# The network


def build_hybrid(hparams: dict[str, Any], n_features: int, n_labels: int, crop_size: int = 48,
                 feature_mean: np.ndarray | None = None, feature_var: np.ndarray | None = None,
                 training_model: bool = False) -> Any:
    """The Keras model: inputs ``crop`` (N, S, S, 1) standardised crops and ``mesh`` (N, F)
    features (only those its branches read), output (N, n_labels) probabilities. With
    ``training_model`` returns ``(train_model, model)``: the first also outputs the auxiliary
    pixels-only probabilities when ``aux_pixel_loss`` is set (it shares every layer with the second)."""
    _, keras = import_keras()
    layers = keras.layers
    hp = {**DEFAULT_HPARAMS, **hparams}
    reg = keras.regularizers.l2(hp["l2"]) if hp["l2"] else None
    inputs, parts = [], []

    if hp["branches"] in ("fused", "pixels"):
        crop_in = keras.Input((crop_size, crop_size, 1), name="crop")
        inputs.append(crop_in)
        x = layers.Conv2D(hp["stem"], 3, padding="same", use_bias=False, kernel_regularizer=reg, name="stem")(crop_in)
        x = layers.BatchNormalization(name="stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
        for s, channels in enumerate(hp["stages"]):
            for b in range(int(hp["blocks_per_stage"])):
                stride = 2 if b == 0 else 1
                name = f"s{s}b{b}"
                shortcut = x
                if stride != 1 or shortcut.shape[-1] != channels:
                    shortcut = layers.Conv2D(channels, 1, strides=stride, padding="same", use_bias=False,
                                             kernel_regularizer=reg, name=f"{name}_short")(x)
                    shortcut = layers.BatchNormalization(name=f"{name}_short_bn")(shortcut)
                y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw1")(x)
                y = layers.BatchNormalization(name=f"{name}_dw1_bn")(y)
                y = layers.Conv2D(channels, 1, use_bias=False, kernel_regularizer=reg, name=f"{name}_pw1")(y)
                y = layers.BatchNormalization(name=f"{name}_pw1_bn")(y)
                y = layers.ReLU(name=f"{name}_relu1")(y)
                y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw2")(y)
                y = layers.BatchNormalization(name=f"{name}_dw2_bn")(y)
                y = layers.Conv2D(channels, 1, use_bias=False, kernel_regularizer=reg, name=f"{name}_pw2")(y)
                y = layers.BatchNormalization(name=f"{name}_pw2_bn")(y)
                x = layers.Add(name=f"{name}_add")([y, shortcut])
                x = layers.ReLU(name=f"{name}_relu2")(x)
        p = layers.GlobalAveragePooling2D(name="pixel_pool")(x)
        p = layers.Dropout(hp["pixel_dropout"], name="pixel_dropout")(p)
        parts.append(p)
        pixel_embedding = p

    if hp["branches"] in ("fused", "mesh"):
        mesh_in = keras.Input((n_features,), name="mesh")
        inputs.append(mesh_in)
        mean = np.zeros(n_features) if feature_mean is None else feature_mean
        var = np.ones(n_features) if feature_var is None else feature_var
        m = layers.Normalization(mean=mean, variance=np.maximum(var, 1e-8), name="mesh_norm")(mesh_in)
        m = layers.Dense(hp["mesh_units"], kernel_regularizer=reg, name="mesh_dense")(m)
        m = layers.ReLU(name="mesh_relu")(m)
        m = layers.Dropout(hp["mesh_dropout"], name="mesh_dropout")(m)
        if hp["mesh_drop"] and hp["branches"] == "fused":
            # the whole embedding of a face at once, so that the pixel branch learns on its own too
            m = layers.Dropout(hp["mesh_drop"], noise_shape=(None, 1), name="mesh_drop")(m)
        parts.append(m)

    if not parts:
        raise ValueError(f"unknown branches {hp['branches']!r}; valid: fused, pixels, mesh")
    z = layers.Concatenate(name="fuse")(parts) if len(parts) > 1 else parts[0]
    if hp["fusion_units"]:
        z = layers.Dense(hp["fusion_units"], kernel_regularizer=reg, name="fusion_dense")(z)
        z = layers.ReLU(name="fusion_relu")(z)
        z = layers.Dropout(hp["fusion_dropout"], name="fusion_dropout")(z)
    out = layers.Dense(n_labels, activation="softmax", name="probabilities")(z)
    model = keras.Model(inputs, out, name="hybrid")
    if not training_model:
        return model
    if hp["aux_pixel_loss"] and hp["branches"] == "fused":
        aux = layers.Dense(n_labels, activation="softmax", name="pixel_probabilities")(pixel_embedding)
        return keras.Model(inputs, [out, aux], name="hybrid_training"), model
    return model, model


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass (convolutions and dense layers)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D"):
            h, w, c_out = layer.output_shape[1:]
            kh, kw = layer.kernel_size
            c_in = layer.input_shape[-1]
            total += h * w * kh * kw * (c_out * c_in if kind == "Conv2D" else c_in)
        elif kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
    return int(total)


# --------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class HybridData:
    """The faces of one or more MeshTables as the network's inputs: ``crops`` (N, S, S) uint8,
    ``x`` (N, F) mesh features and ``x_mirror`` those of the mirrored faces, ``y`` label indices,
    ``domain`` a name per face (e.g. "fer2013", "photos"), plus ``y_all`` / ``found`` over every
    image for evaluation (an image without a face counts as wrong)."""

    crops: np.ndarray
    x: np.ndarray
    x_mirror: np.ndarray
    y: np.ndarray
    domain: np.ndarray
    y_all: np.ndarray
    found: np.ndarray
    labels: tuple[str, ...]
    feature_set: str

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, rows: np.ndarray) -> "HybridData":
        """The faces ``rows`` (an index or mask over the faces; y_all/found become those faces')."""
        rows = np.asarray(rows)
        return HybridData(self.crops[rows], self.x[rows], self.x_mirror[rows], self.y[rows], self.domain[rows],
                          self.y[rows], np.ones(len(self.y[rows]), bool), self.labels, self.feature_set)

    @classmethod
    def concat(cls, parts: Sequence["HybridData"]) -> "HybridData":
        first = parts[0]
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return cls(cat("crops"), cat("x"), cat("x_mirror"), cat("y"), cat("domain"), cat("y_all"), cat("found"),
                   first.labels, first.feature_set)


def prepare_hybrid(table: Any, feature_set: str, labels: Sequence[str], domain: str = "") -> HybridData:
    """:class:`HybridData` of the faces of a MeshTable (which must hold crops) whose label is one
    of ``labels``; images with other labels are left out of ``y_all`` too."""
    from .errors import MeshferError

    if not table.has_crops:
        raise MeshferError("this mesh table holds no face crops; extract it again with crops (meshfer extract)")
    labels = tuple(labels)
    index = {label: i for i, label in enumerate(labels)}
    y_all = np.array([index.get(str(v), -1) for v in table.labels], dtype=np.int64)
    keep = y_all >= 0
    table = table.subset(np.flatnonzero(keep))
    y_all = y_all[keep]
    found = np.asarray(table.found, bool)
    lm, bs, sizes = table.landmarks[found], table.blendshapes[found], table.image_sizes[found]
    x = features.compute(feature_set, lm, bs, sizes)
    xm = features.compute(feature_set, features.mirror_landmarks(lm), features.mirror_blendshapes(bs), sizes)
    n = int(found.sum())
    return HybridData(np.ascontiguousarray(table.crops[found]), x, xm, y_all[found], np.full(n, domain), y_all,
                      found, labels, feature_set)


def augment_crops(crops: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A random photometric and geometric variation of each uint8 crop (N, S, S): what photos and
    webcams add to a face. Mirroring is not done here (the mesh must be mirrored with it)."""
    import cv2

    n, s = len(crops), crops.shape[1]
    out = np.empty_like(crops)
    c = s / 2.0
    for i in range(n):
        img = crops[i]
        angle = rng.uniform(-12, 12) * strength
        scale = 1.0 + rng.uniform(-0.1, 0.1) * strength
        shift = rng.uniform(-0.06, 0.06, 2) * s * strength
        m = cv2.getRotationMatrix2D((c, c), angle, scale)
        m[:, 2] += shift
        img = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if rng.random() < 0.2 * strength:  # lower resolution (small faces, webcams)
            f = rng.uniform(0.4, 0.75)
            k = max(8, int(s * f))
            img = cv2.resize(cv2.resize(img, (k, k), interpolation=cv2.INTER_AREA), (s, s), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.25 * strength:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
        if rng.random() < 0.25 * strength:
            ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 80))])
            if ok:
                img = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
        out[i] = img
    x = out.astype(np.float32) / 255.0
    # brightness, contrast, gamma
    gamma = np.exp(rng.uniform(-0.4, 0.4, (n, 1, 1)) * strength)
    x = x ** gamma
    contrast = 1.0 + rng.uniform(-0.35, 0.35, (n, 1, 1)) * strength
    mean = x.mean(axis=(1, 2), keepdims=True)
    x = (x - mean) * contrast + mean + rng.uniform(-0.15, 0.15, (n, 1, 1)) * strength
    noisy = rng.random(n) < 0.3 * strength
    if noisy.any():
        sigma = rng.uniform(0.01, 0.05, (int(noisy.sum()), 1, 1))
        x[noisy] += rng.normal(0.0, 1.0, (int(noisy.sum()), s, s)).astype(np.float32) * sigma
    # random erasing: one rectangle of 4-20 % of the crop, filled with noise
    erase = np.flatnonzero(rng.random(n) < 0.3 * strength)
    for i in erase:
        area = rng.uniform(0.04, 0.2) * s * s
        ratio = np.exp(rng.uniform(np.log(0.4), np.log(2.5)))
        h = int(min(s, max(2, np.sqrt(area * ratio))))
        w = int(min(s, max(2, np.sqrt(area / ratio))))
        y0, x0 = rng.integers(0, s - h + 1), rng.integers(0, s - w + 1)
        x[i, y0:y0 + h, x0:x0 + w] = rng.random((h, w))
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def epoch_inputs(train: HybridData, rng: np.random.Generator, augment: bool = True,
                 strength: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One epoch's training inputs ``(crops, x, order, flipped)``: a random half of the faces
    mirrored (crop and mesh), every crop varied (:func:`augment_crops`) when ``augment``, in a random
    ``order`` (rows of ``train``); ``flipped`` tells which of them were mirrored."""
    flip = rng.random(len(train)) < 0.5
    crops = train.crops.copy()
    crops[flip] = crops[flip][:, :, ::-1]
    if augment:
        crops = augment_crops(crops, rng, strength)
    x = np.where(flip[:, None], train.x_mirror, train.x)
    order = rng.permutation(len(train))
    return crops[order], x[order], order, flip[order]


def _inputs(model: Any, crops: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    names = {t.name.split(":")[0] for t in model.inputs}
    out: dict[str, np.ndarray] = {}
    if "crop" in names:
        out["crop"] = standardize(crops)
    if "mesh" in names:
        out["mesh"] = np.asarray(x, np.float32)
    return out


def train_epoch(train_model: Any, model: Any, crops: np.ndarray, x: np.ndarray, target: np.ndarray,
                weights: np.ndarray, batch: int, aux: bool) -> list[float]:
    """One pass over an epoch's inputs, batch by batch (``train_on_batch``: one ``fit()`` call per
    epoch would build a new input pipeline each time, and TensorFlow keeps some memory of every one);
    ``aux``: ``train_model`` also has the auxiliary head, trained on the same targets. The batches'
    losses."""
    losses = []
    for b0 in range(0, len(x), batch):
        sl = slice(b0, b0 + batch)
        out = train_model.train_on_batch(_inputs(model, crops[sl], x[sl]), [target[sl], target[sl]] if aux
                                         else target[sl], sample_weight=weights[sl])
        losses.append(float(out[0] if isinstance(out, (list, tuple)) else out))
    return losses


def predict_hybrid(model: Any, crops: np.ndarray, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(N, C) probabilities of a Keras hybrid model for uint8 crops and mesh features."""
    if not len(x):
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.asarray(model.predict(_inputs(model, crops, x), batch_size=batch_size, verbose=0))


# --------------------------------------------------------------------------------------------------
# Training


@dataclass
class FitResult:
    """A trained model and how training went: per-epoch ``history`` (loss, held-out macro-F1 and
    accuracy, seconds), the ``best_epoch`` whose weights were kept, and the wall-clock time."""

    model: Any
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    stopped: str = ""
    ratios: dict[str, list[float]] = field(default_factory=dict)  # domain_ratios, with domain_prior="adjust"
    averaged: bool = False  # the kept weights are the running average (weight_average), not one epoch's


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    f1s = []
    for c in range(k):
        tp = np.sum((pred == c) & (y == c))
        support, predicted = np.sum(y == c), np.sum(pred == c)
        if support == 0:
            continue
        p = tp / predicted if predicted else 0.0
        r = tp / support
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def sample_weights(y: np.ndarray, domain: np.ndarray, n_labels: int, power: float, photo_weight: float = 1.0) -> np.ndarray:
    """Per-face training weights: within each domain (FER-2013, photos), classes weighted
    ``(n_d / (k_d * n_dc)) ** power`` over the ``k_d`` classes that domain has, so that a domain with
    few photos of a class (34 surprised among 3,034 photos) still teaches it, and no domain teaches
    "this kind of picture is neutral"; the photos' total weight is then scaled by ``photo_weight``
    relative to their share. Mean weight 1."""
    y = np.asarray(y, dtype=np.int64)
    domain = np.asarray(domain).astype(str)
    w = np.zeros(len(y), dtype=np.float64)
    for d in np.unique(domain):
        rows = domain == d
        counts = np.bincount(y[rows], minlength=n_labels).astype(float)
        present = int((counts > 0).sum())
        cw = np.where(counts > 0, rows.sum() / (present * np.maximum(counts, 1)), 0.0) ** power
        dw = cw[y[rows]]
        dw *= 1.0 / dw.mean()  # each domain keeps its share of the total weight
        w[rows] = dw * (photo_weight if d == "photos" else 1.0)
    return (w / w.mean()).astype(np.float32) if len(w) else w.astype(np.float32)


def _reference_domain(domain: np.ndarray) -> str:
    names, counts = np.unique(np.asarray(domain).astype(str), return_counts=True)
    return str(names[int(np.argmax(counts))]) if len(names) else ""


def domain_ratios(y: np.ndarray, domain: np.ndarray, weights: np.ndarray, n_labels: int) -> dict[str, list[float]]:
    """For ``domain_prior="adjust"``: per domain, its (weighted) class prior divided by that of the
    reference domain (the largest, FER-2013), 0 for the classes it has no face of. The network's
    probabilities are those of the reference domain; ``p * r / sum(p * r)`` are a face's of domain
    ``d`` (what its training loss and the held-out selection score see). Photos with 1,500 neutral
    and 34 surprised faces then do not teach "a photo is rarely surprised, never angry"."""
    y = np.asarray(y, dtype=np.int64)
    domain = np.asarray(domain).astype(str)
    priors = {}
    for d in np.unique(domain):
        rows = domain == d
        mass = np.bincount(y[rows], weights=np.asarray(weights, np.float64)[rows], minlength=n_labels)
        priors[str(d)] = mass / max(mass.sum(), 1e-12)
    ref = priors.get(_reference_domain(domain))
    if ref is None:
        return {}
    return {d: [float(v) for v in np.where(ref > 0, p / np.maximum(ref, 1e-12), 0.0)] for d, p in priors.items()}


def adjust_to_domains(proba: np.ndarray, domain: np.ndarray, ratios: dict[str, Sequence[float]] | None) -> np.ndarray:
    """``proba`` (reference-domain probabilities) as those of each face's own domain (see
    :func:`domain_ratios`); unchanged where ``ratios`` is empty or names no such domain."""
    if not ratios or not len(proba):
        return proba
    r = np.ones_like(proba, dtype=np.float64)
    domain = np.asarray(domain).astype(str)
    for d, v in ratios.items():
        r[domain == d] = np.asarray(v, np.float64)
    out = np.asarray(proba, np.float64) * r
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)


def selection_score(held_out: HybridData, pred: np.ndarray, n_labels: int, min_support: int = 10) -> float:
    """What early stopping maximises: the mean over domains of each domain's macro-F1 on the
    held-out images, over the classes with at least ``min_support`` of them (three held-out photos
    of a class would make the score jump with every one of them)."""
    scores = []
    for dom in np.unique(held_out.domain):
        rows = held_out.domain == dom
        y = held_out.y[rows]
        counts = np.bincount(y, minlength=n_labels)
        keep = np.isin(y, np.flatnonzero(counts >= min_support))
        if keep.any():
            f1s = []
            for c in np.flatnonzero(counts >= min_support):
                tp = np.sum((pred[rows] == c) & (y == c))
                predicted = np.sum(pred[rows][keep] == c)
                p = tp / predicted if predicted else 0.0
                r = tp / counts[c]
                f1s.append(2 * p * r / (p + r) if p + r else 0.0)
            scores.append(float(np.mean(f1s)))
    return float(np.mean(scores)) if scores else 0.0


def fit_hybrid(
    train: HybridData,
    held_out: HybridData,
    hparams: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[dict[str, float]], None] | None = None,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
) -> FitResult:
    """Train a hybrid network on ``train`` and keep the weights of the epoch with the best
    :func:`selection_score` on ``held_out`` (images of the training folders that were set aside,
    never validation).
    ``log`` receives each epoch's row of the history. ``teacher``: (N, k) probabilities of another
    model for each training face and for its mirror image; with ``training["distill"] = a`` each
    face's target is ``(1 - a) * label + a * teacher`` (knowledge distillation), the mirrored
    faces taking the mirror image's probabilities."""
    opts = {**DEFAULT_TRAINING, **(training or {})}
    hp = {**DEFAULT_HPARAMS, **(hparams or {})}
    tf, keras = import_keras(opts["threads"])
    keras.utils.set_random_seed(int(seed))
    k = len(train.labels)
    mean, var = train.x.mean(axis=0), train.x.var(axis=0)
    train_model, model = build_hybrid(hp, train.x.shape[1], k, train.crops.shape[1], mean, var, training_model=True)
    aux = train_model is not model
    distill = float(opts.get("distill") or 0.0)
    if not 0.0 <= distill <= 1.0:
        raise ValueError(f"distill={distill}: use a share in [0, 1]")
    if distill > 0 and teacher is None:
        raise ValueError("distill > 0 needs the teacher's probabilities (fit_hybrid(..., teacher=(proba, proba_mirror)))")
    if teacher is not None:
        teacher = tuple(np.asarray(t, np.float32) for t in teacher)  # type: ignore[assignment]
        if any(t.shape != (len(train), k) for t in teacher):  # type: ignore[union-attr]
            raise ValueError(f"teacher probabilities must be two ({len(train)}, {k}) arrays")

    adjust = str(opts.get("domain_prior", "weight")) == "adjust"
    if str(opts.get("domain_prior", "weight")) not in ("weight", "adjust"):
        raise ValueError(f"domain_prior={opts['domain_prior']!r}: use weight or adjust")
    if adjust and distill > 0:
        raise ValueError("distill and domain_prior=adjust do not combine")
    power = float(opts["class_weight_power"])
    if adjust:  # class weights in the reference domain only; the others keep their own label mix
        ref = train.domain.astype(str) == _reference_domain(train.domain)
        weights = sample_weights(train.y, train.domain, k, 0.0, float(opts["photo_weight"]))
        weights[ref] *= sample_weights(train.y[ref], train.domain[ref], k, power)  # mean 1: the domain keeps its share
        weights = (weights / weights.mean()).astype(np.float32)
        ratios = domain_ratios(train.y, train.domain, weights, k)
    else:
        weights = sample_weights(train.y, train.domain, k, power, float(opts["photo_weight"]))
        ratios = {}

    batch = int(opts["batch_size"])
    steps = int(np.ceil(len(train) / batch))
    epochs = int(opts["epochs"])
    warmup = int(opts["warmup_epochs"]) * steps
    total = epochs * steps
    base_lr = float(opts["learning_rate"])

    class WarmCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            step = tf.cast(step, tf.float32)
            warm = base_lr * (step + 1.0) / float(max(1, warmup))
            progress_ = tf.clip_by_value((step - warmup) / float(max(1, total - warmup)), 0.0, 1.0)
            cos = base_lr * (0.02 + 0.98 * 0.5 * (1.0 + tf.cos(np.pi * progress_)))
            return tf.where(step < warmup, warm, cos)

        def get_config(self) -> dict[str, Any]:
            return {}

    smoothing = float(opts["label_smoothing"])
    if adjust:
        # y_true carries each face's smoothed target over the classes of its domain, then the
        # domain's prior ratios: the loss scores p * r / sum(p * r)
        r = adjust_to_domains(np.ones((len(train), k)), train.domain, ratios).astype(np.float32)
        present = (r > 0).astype(np.float32)
        onehot = np.eye(k, dtype=np.float32)[train.y]
        onehot = (1.0 - smoothing) * onehot + smoothing * present / present.sum(axis=1, keepdims=True)
        onehot = np.concatenate([onehot, r / r.max(axis=1, keepdims=True)], axis=1)

        def loss(y_true: Any, y_pred: Any) -> Any:
            target, ratio = y_true[:, :k], y_true[:, k:]
            q = y_pred * ratio
            q = q / tf.maximum(tf.reduce_sum(q, axis=1, keepdims=True), 1e-12)
            return -tf.reduce_sum(target * tf.math.log(tf.clip_by_value(q, 1e-7, 1.0)), axis=1)
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
        onehot = np.eye(k, dtype=np.float32)[train.y]
    train_model.compile(
        optimizer=keras.optimizers.Adam(WarmCosine()),
        loss=[loss, loss] if aux else loss,
        loss_weights=[1.0, float(hp["aux_pixel_loss"])] if aux else None,
    )
    result = FitResult(model)
    best_f1, best_weights, waited = -1.0, None, 0
    start = time.perf_counter()
    budget = float(opts["max_minutes"]) * 60 if opts.get("max_minutes") else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, unit="epoch", desc="Training hybrid", dynamic_ncols=True)
    momentum = float(opts.get("weight_average") or 0.0)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"weight_average={momentum}: use a momentum in [0, 1)")
    average: list[np.ndarray] | None = None

    def held_pred() -> np.ndarray:
        proba = predict_hybrid(model, held_out.crops, held_out.x)
        return adjust_to_domains(proba, held_out.domain, ratios).argmax(axis=1)

    def draw(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return epoch_inputs(train, r, bool(opts["augment"]) and hp["branches"] != "mesh", float(opts["augment_strength"]))

    from concurrent.futures import ThreadPoolExecutor

    # The next epoch's augmentation runs in a thread while TensorFlow trains on this one's (OpenCV
    # and NumPy release the GIL). Each epoch has its own generator, so results do not depend on timing.
    seeds = np.random.SeedSequence(int(seed)).spawn(epochs)
    pool = ThreadPoolExecutor(1)
    pending = pool.submit(draw, np.random.default_rng(seeds[0]))
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            crops, x, order, flipped = pending.result()
            if epoch + 1 < epochs:
                pending = pool.submit(draw, np.random.default_rng(seeds[epoch + 1]))
            target, w = onehot[order], weights[order]
            if distill > 0:
                assert teacher is not None
                soft = np.where(flipped[:, None], teacher[1][order], teacher[0][order])
                target = (1.0 - distill) * target + distill * soft
            losses = train_epoch(train_model, model, crops, x, target, w, batch, aux)
            pred = held_pred()
            f1 = _macro_f1(held_out.y, pred, k)
            acc = float(np.mean(pred == held_out.y)) if len(pred) else 0.0
            score = selection_score(held_out, pred, k)
            row = {"epoch": epoch, "loss": float(np.mean(losses)), "held_out_macro_f1": round(f1, 4),
                   "held_out_accuracy": round(acc, 4), "held_out_score": round(score, 4)}
            for dom in np.unique(held_out.domain):
                mask = held_out.domain == dom
                if dom and mask.any():
                    row[f"held_out_{dom}_accuracy"] = round(float(np.mean(pred[mask] == held_out.y[mask])), 4)
            weights_now = model.get_weights()
            improved = False
            if score > best_f1:
                best_f1, best_weights, result.best_epoch, result.averaged, improved = score, weights_now, epoch, False, True
            if momentum > 0:
                average = weights_now if average is None else [
                    momentum * a + (1.0 - momentum) * w for a, w in zip(average, weights_now)]
                if epoch + 1 >= float(opts["min_epochs"]) * epochs:
                    model.set_weights(average)
                    pred_avg = held_pred()
                    model.set_weights(weights_now)  # training goes on from the epoch's own weights
                    score_avg = selection_score(held_out, pred_avg, k)
                    row["held_out_score_averaged"] = round(score_avg, 4)
                    row["held_out_accuracy_averaged"] = round(float(np.mean(pred_avg == held_out.y)), 4)
                    if score_avg > best_f1:
                        best_f1, best_weights, result.best_epoch = score_avg, [a.copy() for a in average], epoch
                        result.averaged, improved = True, True
            row["seconds"] = round(time.perf_counter() - t0, 1)
            result.history.append(row)
            if log is not None:
                log(row)
            waited = 0 if improved else waited + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(score=f"{score:.3f}", best=f"{best_f1:.3f}")
            if waited >= int(opts["patience"]) and epoch + 1 >= float(opts["min_epochs"]) * epochs:
                result.stopped = f"early stop after epoch {epoch} (no better held-out macro-F1 for {waited} epochs)"
                break
            if budget is not None and time.perf_counter() - start > budget:
                result.stopped = f"time budget of {opts['max_minutes']} min reached after epoch {epoch}"
                break
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        if bar is not None:
            bar.close()
    if best_weights is not None:
        model.set_weights(best_weights)
    result.seconds = time.perf_counter() - start
    result.ratios = ratios
    return result


def worker_setup() -> None:
    """In a spawned training process: Ctrl-C is the parent's to handle, and the process ends when its
    parent does (Linux), instead of training on for nobody after the parent was killed."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _job_worker(args: tuple) -> dict[str, Any]:
    """Runs in a spawned process: one network's training."""
    index, job, queue = args
    worker_setup()
    log = (lambda row: queue.put((index, row))) if queue is not None else None
    result = fit_hybrid(job.train, job.held_out, job.hparams, job.training, seed=job.seed, progress=False, log=log,
                        teacher=job.teacher)
    return {"weights": result.model.get_weights(), "history": result.history, "best_epoch": result.best_epoch,
            "seconds": result.seconds, "stopped": result.stopped, "ratios": result.ratios, "averaged": result.averaged}


@dataclass
class FitJob:
    """One network to train with :func:`fit_parallel`."""

    train: HybridData
    held_out: HybridData
    hparams: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    name: str = ""
    teacher: tuple[np.ndarray, np.ndarray] | None = None  # fit_hybrid's teacher probabilities


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fit_parallel(jobs: Sequence[FitJob], processes: int | None = None, *, progress: bool = True) -> list[FitResult]:
    """Train several networks at once, each in its own process with one TensorFlow thread (on a
    small CPU two one-thread trainings do about twice the work of one two-thread training);
    results in the order of ``jobs``. ``processes`` defaults to the number of cores."""
    jobs = list(jobs)
    procs = max(1, min(len(jobs), int(processes or _cores())))
    if procs == 1:
        return [fit_hybrid(j.train, j.held_out, j.hparams, j.training, seed=j.seed, progress=progress, teacher=j.teacher)
                for j in jobs]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    one_thread = [FitJob(j.train, j.held_out, j.hparams, {**j.training, "threads": 1}, j.seed, j.name, j.teacher)
                  for j in jobs]
    manager = ctx.Manager()
    queue = manager.Queue()
    total = sum(int({**DEFAULT_TRAINING, **j.training}["epochs"]) for j in jobs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="epoch", desc=f"Training {len(jobs)} hybrid networks", dynamic_ncols=True)
    best: dict[int, float] = {}
    from concurrent.futures import ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from .errors import MeshferError

    try:
        # an executor, not multiprocessing.Pool: a training process that dies (a crash inside
        # TensorFlow, the kernel's out-of-memory killer) ends the run with an error instead of a hang
        with ProcessPoolExecutor(procs, mp_context=ctx) as pool:
            futures = [pool.submit(_job_worker, (i, j, queue)) for i, j in enumerate(one_thread)]
            while True:
                done = all(f.done() for f in futures)
                while not queue.empty():
                    i, row = queue.get()
                    best[i] = max(best.get(i, 0.0), row.get("held_out_score", 0.0))
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(best=" ".join(f"{v:.3f}" for _, v in sorted(best.items())))
                if done:
                    break
                wait(futures, timeout=2.0)
            try:
                outs = [f.result() for f in futures]
            except BrokenProcessPool:
                raise MeshferError("a training process died (out of memory, or a crash inside TensorFlow; see the "
                                   "system log); nothing was written") from None
    finally:
        manager.shutdown()
        if bar is not None:
            bar.close()
    import_keras()
    results = []
    for job, out in zip(jobs, outs):
        hp = {**DEFAULT_HPARAMS, **job.hparams}
        mean, var = job.train.x.mean(axis=0), job.train.x.var(axis=0)
        model = build_hybrid(hp, job.train.x.shape[1], len(job.train.labels), job.train.crops.shape[1], mean, var)
        model.set_weights(out["weights"])
        results.append(FitResult(model, out["history"], out["best_epoch"], out["seconds"], out["stopped"], out["ratios"],
                                 out["averaged"]))
    return results


def fit_members(
    train: HybridData,
    held_out: HybridData,
    hparams: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[FitResult]:
    """``training["members"]`` networks fitted with seeds ``seed, seed + 1, ...``, in parallel
    processes (``training["processes"]``, default: one per core) when there are several. Their
    average is the model (:func:`predict_members`); ``teacher`` as in :func:`fit_hybrid`."""
    opts = {**DEFAULT_TRAINING, **(training or {})}
    n = max(1, int(opts["members"]))
    per = {**(training or {}), "members": 1}
    jobs = [FitJob(train, held_out, dict(hparams or {}), per, int(seed) + i, f"member {i}", teacher) for i in range(n)]
    if n == 1:
        return [fit_hybrid(train, held_out, hparams, per, seed=int(seed), progress=progress, teacher=teacher)]
    return fit_parallel(jobs, opts["processes"], progress=progress)


def predict_members(models: Sequence[Any], crops: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The mean probabilities of several Keras hybrid networks."""
    return np.mean([predict_hybrid(m, crops, x) for m in models], axis=0)
