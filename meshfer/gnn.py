"""A graph neural network on the face-mesh graph (Keras 2 through ``tf-keras``, and Spektral).

The face mesh is one fixed graph (478 nodes, MediaPipe's tessellation plus the iris rings and
spokes, :func:`meshfer.features.mesh_adjacency`); every face is a matrix of node features: its
nose-relative, scale-normalised coordinates in the face's own frame (feature set
``graph_aligned``, :func:`meshfer.features.graph_node_features_aligned`). The network works in
Spektral's *mixed mode*: the sparse adjacency is a constant inside the model, a batch of
node-feature matrices goes in. Its input is the flat feature vector of the card's feature set
((N, 478 * 3)), so a GNN is used like every other model (``predict_proba(features)``).

Saving is safe and small: the weights as HDF5 (``<name>.weights.h5``; no pickles, no code) and the
architecture rebuilt from the hyper-parameters kept in the model card's ``extra``.

TensorFlow is imported only here, and only when a function needs it: Spektral 1.3 needs Keras 2,
which with TensorFlow >= 2.16 means the ``tf-keras`` package and ``TF_USE_LEGACY_KERAS=1`` set
before TensorFlow is first imported. :func:`import_tensorflow` takes care of that (and says what to
do when TensorFlow was already imported with Keras 3).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import features, topology
from .errors import MeshferError, ModelError
from .landmarks import NUM_LANDMARKS

__all__ = [
    "FORMAT",
    "DEFAULT_HPARAMS",
    "DEFAULT_TRAINING",
    "CONVOLUTIONS",
    "READOUTS",
    "import_tensorflow",
    "graph_adjacency",
    "mirror_node_features",
    "build_gnn",
    "GNNClassifier",
    "DraftCard",
    "FitResult",
    "class_weights",
    "coarsen_graph",
    "graph_pyramid",
    "node_features",
    "fit_gnn",
    "save_gnn",
    "load_gnn",
    "train",
]

#: The model card ``format`` of a GNN.
FORMAT = "gnn-keras"
_LEGACY_KERAS = "TF_USE_LEGACY_KERAS"
_N_COORDS = 3

#: Graph convolutions that work in mixed mode: name -> what the adjacency becomes.
CONVOLUTIONS = {
    "gcn": "GCN (Kipf & Welling): symmetric-normalised adjacency with self-loops",
    "gcs": "GCN with a separate skip (self) weight: normalised adjacency without self-loops",
    "gin": "GIN (Xu et al.): sum over neighbours plus (1 + eps) x self, then an MLP",
    "cheb": "Chebyshev polynomial filters (K=2) of the rescaled normalised Laplacian",
    "arma": "ARMA filters (one stack, one iteration)",
}
#: How node embeddings become one vector per face.
READOUTS = {
    "flatten": "per-node projection to a few channels, then all nodes side by side (keeps which node is which)",
    "meanmax": "global mean and max pooling",
    "attention": "gated global attention pooling",
    "sum": "global sum pooling",
}

#: Architecture. Stored in the card (``extra["hparams"]``) so that the model can be rebuilt.
DEFAULT_HPARAMS: dict[str, Any] = {
    "conv": "gcs",
    "channels": [16, 16],  # one graph convolution each
    "pool": False,  # max-pool node pairs onto a coarser graph between convolutions
    "batch_norm": False,
    "jk": True,  # jumping knowledge: the readout sees the input and every convolution's output
    "node_embedding": 0,  # learnt per-node vector appended to the coordinates (0: none)
    "readout": "flatten",
    "readout_channels": 8,
    "dense": [256],
    "dropout": 0.3,
    "l2": 1e-5,
    "mirror_tta": True,  # average the predictions of the face and of its mirror image
}

#: Training options (``meshfer train gnn ... --option key=value``).
DEFAULT_TRAINING: dict[str, Any] = {
    "epochs": 30,  # upper bound; early stopping on the validation split may end training sooner
    "patience": 8,
    "batch_size": 128,
    "learning_rate": 2e-3,
    "schedule": "cosine",  # "cosine": decay to 5 % over `epochs`; "plateau": halve when the validation loss stalls
    "class_weight_power": 0.25,  # weights (n / (k * n_c)) ** power: 0 none, 1 "balanced"
    "mirror": True,  # random horizontal mirror of each training face (landmark level)
    "threads": 1,  # TensorFlow intra-/inter-op threads (only if TensorFlow is not running yet)
    "max_minutes": None,  # stop after the epoch that passes this wall-clock budget (None: no limit)
}


# --------------------------------------------------------------------------------------------------
# TensorFlow with Keras 2


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def import_tensorflow(threads: int | None = None) -> tuple[Any, Any]:
    """Import TensorFlow with Keras 2 (``tf-keras``) and Spektral; return ``(tf, keras)``.

    Sets ``TF_USE_LEGACY_KERAS=1`` first when TensorFlow is not imported yet. If it is, and it was
    started with Keras 3 (Spektral would then build Keras 3 layers that do not work), raises
    :class:`MeshferError` saying what to do. ``threads`` sets TensorFlow's intra- and inter-op
    thread pools when TensorFlow has not started them yet (ignored otherwise).
    """
    started = "tensorflow" in sys.modules
    if not started:
        os.environ[_LEGACY_KERAS] = "1"
    elif not _truthy(os.environ.get(_LEGACY_KERAS)) and "spektral" not in sys.modules:
        raise MeshferError(_keras3_message())
    try:
        import tensorflow as tf
        import tf_keras
        import spektral.layers  # noqa: F401  (checked below)
    except ImportError as exc:
        raise MeshferError(
            f"the GNN needs TensorFlow, tf-keras and Spektral ({exc}); install them with "
            "pip install 'meshfer[gnn]'"
        ) from None
    from spektral.layers import GCNConv

    if not issubclass(GCNConv, tf_keras.layers.Layer):
        raise MeshferError(_keras3_message())
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # TensorFlow's thread pools are already running
    return tf, tf_keras


def _keras3_message() -> str:
    return (
        "TensorFlow was imported with Keras 3, but the GNN (Spektral 1.3) needs Keras 2: set the environment "
        f"variable {_LEGACY_KERAS}=1 before TensorFlow is first imported (e.g. at the top of your script, or "
        "in the shell), or call meshfer.gnn.import_tensorflow() before anything imports TensorFlow"
    )


# --------------------------------------------------------------------------------------------------
# The graph and its inputs


def coarsen_graph(edges: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """One level of Graclus-style coarsening (as in Defferrard et al.'s graph CNNs), deterministic.

    Nodes are visited by increasing degree; each unmatched node is paired with the unmatched
    neighbour of largest normalised-cut weight ``1/d_i + 1/d_j`` (a node with none stays alone).
    Returns ``clusters`` (K, 2) - the two member nodes of each coarse node (twice the same for a
    singleton), used for max pooling - and the coarse graph's edges (E', 2), i < j, unique.
    """
    edges = np.asarray(edges, dtype=np.int64)
    degree = np.bincount(edges.ravel(), minlength=n_nodes)
    neighbours: list[list[int]] = [[] for _ in range(n_nodes)]
    for i, j in edges.tolist():
        neighbours[i].append(j)
        neighbours[j].append(i)
    cluster = np.full(n_nodes, -1, dtype=np.int64)
    members: list[tuple[int, int]] = []
    for i in np.argsort(degree, kind="stable").tolist():
        if cluster[i] >= 0:
            continue
        free = [j for j in neighbours[i] if cluster[j] < 0 and j != i]
        j = max(free, key=lambda k: (1.0 / degree[i] + 1.0 / degree[k], -k)) if free else i
        cluster[i] = cluster[j] = len(members)
        members.append((i, j))
    coarse = np.sort(cluster[edges], axis=1)
    coarse = np.unique(coarse[coarse[:, 0] != coarse[:, 1]], axis=0)
    return np.asarray(members, dtype=np.int64), coarse


def graph_pyramid(levels: int) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """The face-mesh graph and ``levels`` coarsenings of it: a list of ``(n_nodes, edges,
    clusters)`` from the full mesh down, ``clusters`` mapping level k to level k + 1 (None for
    the coarsest). Needs no TensorFlow."""
    edges, n = topology.mesh_edges(), NUM_LANDMARKS
    out: list[tuple[int, np.ndarray, np.ndarray | None]] = []
    for _ in range(levels):
        clusters, coarse = coarsen_graph(edges, n)
        out.append((n, edges, clusters))
        edges, n = coarse, len(clusters)
    out.append((n, edges, None))
    return out


def graph_adjacency(conv: str, edges: np.ndarray | None = None, n_nodes: int = NUM_LANDMARKS) -> Any:
    """The adjacency that graph convolution ``conv`` works on, as a scipy sparse matrix
    (normalised, Laplacian, ... as the Spektral layer expects) for an undirected graph given by
    its ``edges`` (default: the face mesh, :func:`meshfer.features.mesh_adjacency`)."""
    import scipy.sparse as sp

    if edges is None:
        a = sp.csr_matrix(features.mesh_adjacency())
    else:
        e = np.asarray(edges, dtype=np.int64)
        rows, cols = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
        a = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_nodes, n_nodes))
    if conv == "gin":
        return a  # GIN sums the raw neighbours
    if conv in ("gcn", "gcs", "arma", "cheb"):
        deg = np.asarray(a.sum(axis=1)).ravel()
        if conv == "gcn":
            a = a + sp.eye(a.shape[0], dtype=a.dtype, format="csr")
            deg = deg + 1
        d = sp.diags(1.0 / np.sqrt(np.maximum(deg, 1)))
        norm = (d @ a @ d).tocsr()
        if conv == "cheb":
            # Rescaled Laplacian 2 L / lambda_max - I with lambda_max = 2, the bound for a normalised
            # Laplacian (Spektral's own ChebConv.preprocess fails with SciPy >= 1.14).
            return (-norm).tocsr()
        return norm
    raise ValueError(f"unknown graph convolution {conv!r}; valid: {', '.join(CONVOLUTIONS)}")


def mirror_node_features(x: np.ndarray) -> np.ndarray:
    """Flat graph node features (N, 478 * 3) of the mirrored faces, computed from the features:
    for the ``nose_relative`` and ``graph_aligned`` feature sets the mirror image is the
    left/right-swapped nodes with x negated (the same as :func:`meshfer.features.mirror_landmarks`
    then the features; a test checks it)."""
    nodes = np.asarray(x, dtype=np.float32).reshape(len(x), NUM_LANDMARKS, _N_COORDS)
    out = nodes[:, topology.mirror_permutation()].copy()
    out[..., 0] *= -1.0
    return out.reshape(len(x), -1)


def _node_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-node, per-coordinate mean and standard deviation of flat node features."""
    nodes = x.reshape(len(x), NUM_LANDMARKS, _N_COORDS)
    mean = nodes.mean(axis=0, dtype=np.float64)
    std = np.maximum(nodes.std(axis=0, dtype=np.float64), 1e-3)
    return mean.astype(np.float32), std.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# The network


def _hparams(hparams: dict[str, Any] | None) -> dict[str, Any]:
    hp = dict(DEFAULT_HPARAMS)
    hp.update(hparams or {})
    unknown = set(hp) - set(DEFAULT_HPARAMS)
    if unknown:
        raise ValueError(f"unknown GNN hyper-parameters: {', '.join(sorted(unknown))}")
    if hp["conv"] not in CONVOLUTIONS:
        raise ValueError(f"unknown graph convolution {hp['conv']!r}; valid: {', '.join(CONVOLUTIONS)}")
    if hp["readout"] not in READOUTS:
        raise ValueError(f"unknown readout {hp['readout']!r}; valid: {', '.join(READOUTS)}")
    return hp


def build_gnn(n_classes: int, hparams: dict[str, Any] | None = None) -> Any:
    """An uncompiled Keras model: flat node features (N, 1434) -> class probabilities (N, C).

    One graph convolution per entry of ``channels``; with ``pool`` each but the last is followed
    by a max pooling of node pairs onto the next coarser graph of :func:`graph_pyramid`. Every
    adjacency is a constant sparse tensor inside the model (mixed mode). Per-node input
    standardisation lives in non-trainable weights (set by :func:`fit_gnn`).
    """
    tf, keras = import_tensorflow()
    from spektral import layers as sl
    from spektral.layers import ops
    from tf_keras import backend as K

    hp = _hparams(hparams)
    channels = list(hp["channels"])
    levels = max(len(channels) - 1, 0) if hp["pool"] else 0
    pyramid = graph_pyramid(levels)
    reg = keras.regularizers.l2(hp["l2"]) if hp["l2"] else None

    def sparse(m: Any) -> Any:
        m = m.tocoo()
        idx = np.stack([m.row, m.col], axis=1).astype(np.int64)
        return tf.sparse.reorder(tf.SparseTensor(idx, m.data.astype(np.float32), m.shape))

    class GCNConv(sl.GCNConv):
        """Spektral's GCNConv, propagating before the projection when that is cheaper: (A X) W
        equals A (X W), and the sparse product costs in proportion to the channels it carries."""

        def call(self, inputs: Any, mask: Any = None) -> Any:
            x, a = inputs
            if x.shape[-1] < self.channels:
                out = K.dot(ops.modal_dot(a, x), self.kernel)
            else:
                out = ops.modal_dot(a, K.dot(x, self.kernel))
            if self.use_bias:
                out = K.bias_add(out, self.bias)
            return self.activation(out)

    class GCSConv(sl.GCSConv):
        """Spektral's GCSConv (A X W1 + X W2), propagating before the projection when cheaper."""

        def call(self, inputs: Any, mask: Any = None) -> Any:
            x, a = inputs
            if x.shape[-1] < self.channels:
                out = K.dot(ops.modal_dot(a, x), self.kernel_1)
            else:
                out = ops.modal_dot(a, K.dot(x, self.kernel_1))
            out += K.dot(x, self.kernel_2)
            if self.use_bias:
                out = K.bias_add(out, self.bias)
            return self.activation(out)

    class FreshGlorot(keras.initializers.Initializer):
        """Glorot-uniform with new values at every call. Spektral layers share one initializer
        between their kernels (GCS: kernel_1 and kernel_2; GIN: its MLP), and a tf-keras
        initializer gives the same values every time it is called: identical starting kernels."""

        def __call__(self, shape: Any, dtype: Any = None, **kwargs: Any) -> Any:
            return keras.initializers.GlorotUniform()(shape, dtype=dtype)

    def conv_layer(units: int) -> Any:
        kw = dict(activation="relu", kernel_regularizer=reg, kernel_initializer=FreshGlorot())
        if hp["conv"] == "gcn":
            return GCNConv(units, **kw)
        if hp["conv"] == "gcs":
            return GCSConv(units, **kw)
        if hp["conv"] == "gin":
            return sl.GINConvBatch(units, mlp_hidden=[units], mlp_activation="relu", **kw)
        if hp["conv"] == "cheb":
            return sl.ChebConv(units, K=2, **kw)
        return sl.ARMAConv(units, order=1, iterations=1, share_weights=True, **kw)

    class MeshGNN(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="mesh_gnn")
            self.node_mean = self.add_weight(name="node_mean", shape=(NUM_LANDMARKS, _N_COORDS),
                                             initializer="zeros", trainable=False)
            self.node_std = self.add_weight(name="node_std", shape=(NUM_LANDMARKS, _N_COORDS),
                                            initializer="ones", trainable=False)
            self.embedding = None
            if hp["node_embedding"]:
                self.embedding = self.add_weight(name="node_embedding", shape=(NUM_LANDMARKS, hp["node_embedding"]),
                                                 initializer=keras.initializers.RandomNormal(stddev=0.1))
            # Per convolution: its layer, its graph's adjacency, and the pairs pooled after it.
            self.convs = [conv_layer(c) for c in channels]
            self.adjacency, self.pool_pairs = [], []
            for k in range(len(channels)):
                n, edges, clusters = pyramid[min(k, levels)]
                self.adjacency.append(sparse(graph_adjacency(hp["conv"], edges, n)))
                self.pool_pairs.append(tf.constant(clusters, tf.int32) if k < levels else None)
            self.norms = [keras.layers.BatchNormalization() for _ in channels] if hp["batch_norm"] else []
            if hp["readout"] == "flatten":
                self.project = (keras.layers.Dense(hp["readout_channels"], activation="relu", kernel_regularizer=reg)
                                if hp["readout_channels"] else None)
                self.readout = keras.layers.Flatten()
            elif hp["readout"] == "meanmax":
                self.project, self.readout = None, [sl.GlobalAvgPool(), sl.GlobalMaxPool()]
            elif hp["readout"] == "attention":
                width = 2 * (channels[-1] if channels else _N_COORDS)
                self.project, self.readout = None, sl.GlobalAttentionPool(width, kernel_initializer=FreshGlorot())
            else:
                self.project, self.readout = None, sl.GlobalSumPool()
            self.head = []
            for units in hp["dense"]:
                self.head += [keras.layers.Dropout(hp["dropout"]),
                              keras.layers.Dense(units, activation="relu", kernel_regularizer=reg)]
            self.head += [keras.layers.Dropout(hp["dropout"]), keras.layers.Dense(n_classes, activation="softmax")]

        def call(self, inputs: Any, training: bool = False) -> Any:
            x = tf.reshape(inputs, (-1, NUM_LANDMARKS, _N_COORDS))
            x = (x - self.node_mean) / self.node_std
            if self.embedding is not None:
                emb = tf.broadcast_to(self.embedding[None], (tf.shape(x)[0], NUM_LANDMARKS, hp["node_embedding"]))
                x = tf.concat([x, emb], axis=-1)
            skips = [x] if hp["jk"] else []
            for k, conv in enumerate(self.convs):
                x = conv([x, self.adjacency[k]])
                if self.norms:
                    x = self.norms[k](x, training=training)
                if hp["jk"]:
                    skips.append(x)
                if self.pool_pairs[k] is not None:  # max over each pair of nodes -> coarser graph
                    x = tf.reduce_max(tf.gather(x, self.pool_pairs[k], axis=1), axis=2)
                    if skips:  # the skipped features follow onto the coarser graph
                        skips = [tf.reduce_max(tf.gather(tf.concat(skips, -1), self.pool_pairs[k], axis=1), axis=2)]
            if skips:
                x = tf.concat(skips, axis=-1)
            if self.project is not None:
                x = self.project(x)
            if isinstance(self.readout, list):
                x = tf.concat([r(x) for r in self.readout], axis=-1)
            else:
                x = self.readout(x)
            for layer in self.head:
                x = layer(x, training=training) if isinstance(layer, keras.layers.Dropout) else layer(x)
            return x

    model = MeshGNN()
    model(tf.zeros((1, NUM_LANDMARKS * _N_COORDS)))  # create the weights
    return model


class GNNClassifier:
    """A trained GNN with its card: the same interface as :class:`meshfer.models.onnx.OnnxModel`."""

    def __init__(self, model: Any, card: Any, mirror_tta: bool = True, batch_size: int = 512) -> None:
        tf, _ = import_tensorflow()
        self.model = model
        self.card = card
        self.mirror_tta = mirror_tta
        self.batch_size = batch_size
        # A traced function, not model.predict(): no per-call set-up cost for one face.
        spec = tf.TensorSpec((None, NUM_LANDMARKS * _N_COORDS), tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        out = [self._call(x[i : i + self.batch_size]).numpy() for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(self.card.labels)))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, n_labels) class probabilities, columns in ``card.labels`` order."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.shape[1] != self.card.n_features:
            raise ValueError(
                f"model {self.card.name!r} expects {self.card.n_features} features ({self.card.feature_set}), got {x.shape[1]}"
            )
        proba = self._forward(x)
        if self.mirror_tta and len(x):
            proba = 0.5 * (proba + self._forward(mirror_node_features(x)))
        return proba

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) label strings."""
        return np.asarray(self.card.labels)[self.predict_proba(features).argmax(axis=1)]


# --------------------------------------------------------------------------------------------------
# Training


@dataclass
class FitResult:
    """What :func:`fit_gnn` returns: the trained Keras model and how training went."""

    model: Any
    history: dict[str, list[float]] = field(default_factory=dict)  # per epoch: loss, accuracy, val_loss, ...
    best_epoch: int = 0  # 1-based epoch whose weights were kept
    epochs_run: int = 0
    seconds: float = 0.0
    class_weight: dict[int, float] = field(default_factory=dict)


def class_weights(y: np.ndarray, n_classes: int, power: float) -> dict[int, float]:
    """``(n / (k * n_c)) ** power`` per class: 0 gives equal weights, 1 scikit-learn's "balanced"."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(float)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0) ** float(power)
    return {i: float(v) for i, v in enumerate(w)}


def _time_budget(keras: Any, seconds: float) -> Any:
    """A callback that ends training after the epoch in which ``seconds`` have passed."""

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if time.perf_counter() - self.start > seconds:
                self.model.stop_training = True

    return TimeBudget()


def fit_gnn(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    hparams: dict[str, Any] | None = None,
    *,
    x_train_mirror: np.ndarray | None = None,
    seed: int = 0,
    verbose: int = 2,
    **training: Any,
) -> FitResult:
    """Train a GNN on flat node features; early stopping on the validation accuracy.

    ``x_train_mirror`` are the features of the mirrored training faces (row for row); with the
    ``mirror`` option each training face is replaced by its mirror image with probability 1/2 in
    every epoch. Training options are those of :data:`DEFAULT_TRAINING`.
    """
    opts = dict(DEFAULT_TRAINING)
    opts.update(training)
    unknown = set(opts) - set(DEFAULT_TRAINING)
    if unknown:
        raise ValueError(f"unknown GNN training options: {', '.join(sorted(unknown))}")
    tf, keras = import_tensorflow(threads=opts["threads"])
    keras.utils.set_random_seed(seed)
    x_train = np.asarray(x_train, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.int64)
    mirror = bool(opts["mirror"]) and x_train_mirror is not None
    if mirror:
        x_train_mirror = np.asarray(x_train_mirror, dtype=np.float32)
        if x_train_mirror.shape != x_train.shape:
            raise ValueError("x_train_mirror must have the shape of x_train")

    model = build_gnn(n_classes, hparams)
    mean, std = _node_statistics(np.concatenate([x_train, x_train_mirror]) if mirror else x_train)
    model.node_mean.assign(mean)
    model.node_std.assign(std)
    batch_size = int(opts["batch_size"])
    if opts["schedule"] == "cosine":
        steps = int(opts["epochs"]) * int(np.ceil(len(x_train) / batch_size))
        rate: Any = keras.optimizers.schedules.CosineDecay(float(opts["learning_rate"]), max(steps, 1), alpha=0.05)
    elif opts["schedule"] == "plateau":
        rate = float(opts["learning_rate"])
    else:
        raise ValueError(f"unknown schedule {opts['schedule']!r}; valid: cosine, plateau")
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    if mirror:
        def pick(a: Any, b: Any, y: Any) -> Any:
            flip = tf.random.uniform((tf.shape(a)[0], 1), seed=seed) < 0.5
            return tf.where(flip, b, a), y

        data = tf.data.Dataset.from_tensor_slices((x_train, x_train_mirror, y_train))
    else:
        data = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    data = data.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if mirror:
        data = data.map(pick)
    data = data.prefetch(2)
    val = (np.asarray(x_val, dtype=np.float32), np.asarray(y_val, dtype=np.int64))

    weights = class_weights(y_train, n_classes, opts["class_weight_power"])
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=int(opts["patience"]),
                                               restore_best_weights=True)]
    if opts["schedule"] == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(2, int(opts["patience"]) // 3), min_lr=1e-5))
    if opts["max_minutes"]:
        callbacks.append(_time_budget(keras, float(opts["max_minutes"]) * 60.0))
    start = time.perf_counter()
    hist = model.fit(data, validation_data=val, epochs=int(opts["epochs"]), class_weight=weights,
                     callbacks=callbacks, verbose=verbose)
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    accs = history.get("val_accuracy", [])
    best = int(np.argmax(accs)) + 1 if accs else 0
    return FitResult(model, history, best, len(accs), seconds, weights)


# --------------------------------------------------------------------------------------------------
# Saving and loading


def _graph_signature() -> dict[str, Any]:
    """What a saved GNN assumes about the graph (checked when it is loaded)."""
    return {"n_nodes": NUM_LANDMARKS, "n_edges": int(len(topology.mesh_edges()))}


def save_gnn(
    model: Any,
    directory: str | Path,
    *,
    name: str,
    labels: Sequence[str],
    hparams: dict[str, Any],
    feature_set: str = "graph_aligned",
    default: bool = False,
    description: str = "",
    training_data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    landmarker_sha256: str = "",
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Any:
    """Write ``<directory>/<name>.weights.h5`` (Keras HDF5 weights, no pickles) and the card
    ``<name>.json``; return the card. The architecture is not stored as code: it is rebuilt from
    ``hparams`` (kept in the card's ``extra``) by :func:`load_gnn`."""
    import tempfile

    from .assets import sha256_of
    from .models.card import ModelCard, library_versions, utc_now

    directory = Path(directory)
    weights_path, card_path = directory / f"{name}.weights.h5", directory / f"{name}.json"
    if not overwrite:
        for p in (weights_path, card_path):
            if p.exists():
                raise ModelError(f"{p}: exists; pass overwrite=True (--overwrite) to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    # An uncompiled twin holds the weights without the optimizer's state (a third of the size).
    twin = build_gnn(len(labels), hparams)
    twin.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.") as tmp:
        part = Path(tmp) / weights_path.name
        twin.save_weights(str(part))
        os.replace(part, weights_path)
    card = ModelCard(
        name=name,
        task="expression",
        format=FORMAT,
        file=weights_path.name,
        sha256=sha256_of(weights_path),
        feature_set=feature_set,
        n_features=NUM_LANDMARKS * _N_COORDS,
        labels=list(labels),
        default=default,
        description=description,
        estimator=_describe(hparams),
        training_data=dict(training_data or {}),
        metrics=dict(metrics or {}),
        versions=library_versions("tensorflow", "tf-keras", "spektral", "numpy", "scipy", "mediapipe"),
        landmarker_sha256=landmarker_sha256,
        created=utc_now(),
        extra={"hparams": _hparams(hparams), "graph": _graph_signature(), **dict(extra or {})},
        path=card_path.resolve(),
    )
    card.save(card_path)
    return card


def _describe(hparams: dict[str, Any]) -> str:
    hp = _hparams(hparams)
    convs = " -> ".join(f"{hp['conv'].upper()}({c})" for c in hp["channels"])
    pool = " with pair max-pooling" if hp["pool"] and len(hp["channels"]) > 1 else ""
    head = " -> ".join(f"Dense({u})" for u in [*hp["dense"], "softmax"])
    return f"Spektral GNN (mixed mode): {convs}{pool} -> {hp['readout']} readout -> {head}"


def load_gnn(card: Any, threads: int | None = 1) -> GNNClassifier:
    """Rebuild a GNN from its card and load its weights (the caller checks the file's SHA-256,
    as :func:`meshfer.models.load_model` does). ``threads`` limits TensorFlow's thread pools if
    TensorFlow is not running yet."""
    if card.format != FORMAT:
        raise ModelError(f"{card.path}: not a GNN model card (format {card.format!r})")
    extra = card.extra or {}
    if "hparams" not in extra:
        raise ModelError(f"{card.path}: GNN model card lacks extra.hparams (the architecture)")
    graph = extra.get("graph", {})
    if graph and graph != _graph_signature():
        raise ModelError(f"{card.path}: the model was trained on another face graph ({graph}, this meshfer has "
                         f"{_graph_signature()})")
    import_tensorflow(threads=threads)
    try:
        model = build_gnn(len(card.labels), extra["hparams"])
    except ValueError as exc:
        raise ModelError(f"{card.path}: {exc}") from None
    try:
        model.load_weights(str(card.model_path))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{card.model_path}: cannot load the GNN weights ({exc})") from None
    return GNNClassifier(model, card, mirror_tta=bool(extra["hparams"].get("mirror_tta", True)))


# --------------------------------------------------------------------------------------------------
# The training recipe (``meshfer train gnn``)

#: Options of the recipe besides :data:`DEFAULT_TRAINING` and :data:`DEFAULT_HPARAMS`.
RECIPE_OPTIONS = {
    "feature_set": "node features (a registered feature set of 478 x 3 values per face)",
    "transfer_dir": "a second labelled face_<label> folder (e.g. real photos) reported as <name>_accuracy/_macro_f1",
    "test_size": "held-out share of TRAIN_DIR when no --val folder is given (default 0.1, split by group)",
    "exclude_copies": "leave out training images that are byte-identical to a --val image (default true)",
}
DEFAULT_FEATURE_SET = "graph_aligned"


def node_features(table: Any, feature_set: str = DEFAULT_FEATURE_SET, mirror: bool = False) -> np.ndarray:
    """Flat node features (N, 1434) of the found faces of a MeshTable; of the mirrored faces
    (landmark level: :func:`meshfer.features.mirror_landmarks`) with ``mirror``."""
    faces = table.faces() if hasattr(table, "faces") else table
    lm, bs = faces.landmarks, faces.blendshapes
    if mirror:
        lm, bs = features.mirror_landmarks(lm), features.mirror_blendshapes(bs)
    x = features.compute(feature_set, lm, bs, faces.image_sizes)
    if x.shape[1:] != (NUM_LANDMARKS * _N_COORDS,):
        raise ValueError(f"feature set {feature_set!r} gives {x.shape[1:]} values per face, not {NUM_LANDMARKS} x 3")
    return x


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    hp, training, other = {}, {}, {}
    for key, value in options.items():
        if key in DEFAULT_HPARAMS:
            hp[key] = value
        elif key in DEFAULT_TRAINING:
            training[key] = value
        elif key in RECIPE_OPTIONS:
            other[key] = value
        else:
            valid = sorted([*DEFAULT_HPARAMS, *DEFAULT_TRAINING, *RECIPE_OPTIONS])
            raise MeshferError(f"unknown gnn option {key!r}; valid: {', '.join(valid)}")
    return hp, training, other


def _label_index(table: Any, labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(str(label), -1) for label in table.labels], dtype=np.int64)


def train(name: str, config: Any, verbose: int = 2) -> Any:
    """Recipe ``gnn``: fit the GNN on ``config.train_dir``, stop early on the validation folder
    (``--val``; else a 10 % split by group), evaluate (every image counted), save with its card.

    Options (``--option key=value``): the architecture (:data:`DEFAULT_HPARAMS`), training
    (:data:`DEFAULT_TRAINING`) and :data:`RECIPE_OPTIONS`.
    """
    from .datasets import group_split
    from .evaluation import evaluate_table, unseen_metrics
    from .training import as_bool, leave_out_copies, load_meshes, short_path

    hp, training, other = _split_options(dict(config.options))
    hp = _hparams(hp)
    left_out = 0
    feature_set = str(other.get("feature_set", DEFAULT_FEATURE_SET))
    table = load_meshes(Path(config.train_dir), config)
    train_folder = list(table.paths)  # unseen_* leave out the copies of any image of the folder
    labels = list(table.label_names)
    if config.val_dir is not None:
        val_table = load_meshes(Path(config.val_dir), config)
        held_out = f"validation folder {short_path(config.val_dir)}"
        if as_bool(other.get("exclude_copies", True)):
            table, left_out = leave_out_copies(table, val_table)
    else:
        test_size = float(other.get("test_size", 0.1))
        tr, te = group_split(table.groups, test_size, seed=config.seed, stratify=table.labels)
        table, val_table = table.subset(tr), table.subset(te)
        held_out = f"{1 - test_size:.0%}/{test_size:.0%} split of the training folder by group (seed {config.seed})"
    faces, val_faces = table.faces(), val_table.faces()
    if len(faces) < 2 * len(labels) or len(val_faces) == 0:
        raise MeshferError(f"{config.train_dir}: too few faces to train the GNN ({len(faces)} train, {len(val_faces)} held out)")
    y, y_val = _label_index(faces, labels), _label_index(val_faces, labels)
    keep = y_val >= 0
    x, x_mirror = node_features(faces, feature_set), node_features(faces, feature_set, mirror=True)
    x_val = node_features(val_faces, feature_set)[keep]

    fit = fit_gnn(x, y, x_val, y_val[keep], len(labels), hp, x_train_mirror=x_mirror, seed=config.seed,
                  verbose=verbose, **training)
    card_stub = DraftCard(name, labels, feature_set)
    classifier = GNNClassifier(fit.model, card_stub, mirror_tta=bool(hp["mirror_tta"]))
    full = evaluate_table(classifier, val_table)
    metrics: dict[str, Any] = {k: full[k] for k in ("accuracy", "accuracy_on_faces", "coverage", "macro_f1")}
    metrics.update({"n_images": full["n_images"], "n_faces": full["n_faces"], "per_class": full["per_class"],
                    "confusion": full["confusion"]})
    if config.val_dir is not None:
        metrics.update(unseen_metrics(classifier, val_table, train_folder))
    transfer = other.get("transfer_dir")
    if transfer:
        tag = Path(transfer).name.split("-")[0].split("_")[0] or "transfer"
        t = evaluate_table(classifier, load_meshes(Path(transfer), config))
        metrics.update({f"{tag}_accuracy": t["accuracy"], f"{tag}_macro_f1": t["macro_f1"],
                        f"{tag}_coverage": t["coverage"], f"{tag}_n_images": t["n_images"]})

    opts = dict(DEFAULT_TRAINING)
    opts.update(training)
    counts = {label: int((y == i).sum()) for i, label in enumerate(labels)}
    training_data = {
        "source": short_path(config.train_dir),
        "held_out": held_out,
        "n_train_images": int(len(table)),
        "left_out_copies_of_validation_images": left_out,
        "n_train_faces": int(len(faces)),
        "train_counts": counts,
        "n_held_out_images": int(full["n_images"]),
        "transfer_data": short_path(transfer) if transfer else None,
        "augmentation": "random landmark-level mirror (p = 0.5 per face and epoch)" if opts["mirror"] else "none",
        "seed": int(config.seed),
        "limit_per_class": config.limit_per_class,
        "note": "metrics: every validation image counted (no face found = wrong; the validation folder also stopped "
        "training early); unseen_*: the validation images that are not byte-identical copies of an image of the "
        "training folder (the same images for every model, whether or not the copies were left out of training)",
    }
    command = ["meshfer", "train", name, short_path(config.train_dir)]
    command += ["--val", short_path(config.val_dir)] if config.val_dir is not None else []
    command += ["--limit-per-class", str(config.limit_per_class)] if config.limit_per_class else []
    command += ["--seed", str(config.seed)] if config.seed else []
    command += [
        f"--option {k}={short_path(v) if k.endswith('_dir') else v if isinstance(v, str) else json.dumps(v)}"
        for k, v in sorted(config.options.items())
    ]
    training_data["command"] = " ".join(command)
    extra = {
        "training": opts,
        "cpu_count": os.cpu_count(),
        "class_weight": {labels[i]: round(w, 4) for i, w in fit.class_weight.items()},
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "train_seconds": round(fit.seconds, 1),
        "history": {k: [round(v, 5) for v in vals] for k, vals in fit.history.items()},
    }
    description = (
        f"Expression GNN on the face-mesh graph (478 nodes, tessellation + iris) with '{feature_set}' node "
        f"features; trained on {Path(config.train_dir).name} ({len(faces)} faces, mirror augmentation), "
        f"early-stopped and evaluated on the {held_out} (every image counted: no face = wrong)."
    )
    return save_gnn(
        fit.model, config.output_dir, name=name, labels=labels, hparams=hp, feature_set=feature_set,
        default=config.default, description=description, training_data=training_data, metrics=metrics,
        landmarker_sha256=str(table.meta.get("landmarker_sha256", "")), extra=extra, overwrite=config.overwrite,
    )


@dataclass(frozen=True)
class DraftCard:
    """The parts of a model card that :class:`GNNClassifier` reads, for a model not saved yet:
    ``GNNClassifier(fit.model, DraftCard("mine", labels, "nose_relative"))``."""

    name: str
    labels: list[str]
    feature_set: str
    n_features: int = NUM_LANDMARKS * _N_COORDS
