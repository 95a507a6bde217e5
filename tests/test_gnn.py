"""The GNN: its graph, its inputs, saving and loading, the shipped model through the CLI, and
TensorFlow staying out of every other code path.

The GNN notebooks (GNN/*.ipynb) run top to bottom in tests/test_notebooks.py (few images per class,
a couple of epochs: the notebooks derive their epoch count from MESHFER_SAMPLE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FER_VAL, LABELS, REPO, sample_images

from meshfer import features, topology
from meshfer import gnn
from meshfer.errors import MeshferError, ModelError

#: MediaPipe's tessellation has 1,322 distinct undirected edges; each iris adds its 4-edge ring and
#: 4 spokes from the centre.
EXPECTED_EDGES = 1322 + 2 * (4 + 4)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(extra)
    return env


def _python(code: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=_env(**env))


# ------------------------------------------------------------------------------------------------
# The graph


def test_adjacency_is_symmetric_has_the_expected_edges_and_touches_every_node() -> None:
    from scipy.sparse.csgraph import connected_components

    a = features.mesh_adjacency()
    assert a.shape == (478, 478)
    assert np.array_equal(a, a.T)
    assert np.trace(a) == 0 and set(np.unique(a)) == {0.0, 1.0}
    assert int(a.sum()) // 2 == len(topology.mesh_edges()) == EXPECTED_EDGES
    tessellation = np.unique(np.sort(topology.connections("tesselation"), axis=1), axis=0)
    assert len(tessellation) == 1322
    assert (a.sum(axis=1) > 0).all(), "every node has a neighbour (the iris centres through their spokes)"
    # Three components: the face, and each iris (MediaPipe joins no iris point to the face).
    n, component = connected_components(a, directed=False)
    assert n == 3
    assert len(set(component[468:473])) == 1 and len(set(component[473:478])) == 1
    assert len({component[0], component[468], component[473]}) == 3
    assert np.array_equal(np.diag(features.mesh_adjacency(self_loops=True)), np.ones(478))


@pytest.mark.parametrize("conv", sorted(gnn.CONVOLUTIONS))
def test_each_convolution_gets_a_symmetric_adjacency_on_the_mesh(conv: str) -> None:
    m = gnn.graph_adjacency(conv).toarray()
    assert m.shape == (478, 478) and np.allclose(m, m.T)
    support = (np.abs(m) > 0) & ~np.eye(478, dtype=bool)
    assert np.array_equal(support, features.mesh_adjacency() > 0)
    if conv == "gcn":  # D^-1/2 (A + I) D^-1/2: largest eigenvalue 1
        assert np.isclose(np.linalg.eigvalsh(m).max(), 1.0, atol=1e-5)


def test_adjacencies_match_spektrals_own_preprocessing() -> None:
    gnn.import_tensorflow()
    from spektral import layers as sl

    from spektral.utils import normalized_laplacian

    a = features.mesh_adjacency()
    for conv, layer in (("gcn", sl.GCNConv), ("gcs", sl.GCSConv), ("arma", sl.ARMAConv)):
        expected = layer.preprocess(a.copy())
        expected = expected.toarray() if hasattr(expected, "toarray") else np.asarray(expected)
        np.testing.assert_allclose(gnn.graph_adjacency(conv).toarray(), expected, atol=1e-5, err_msg=conv)
    # ChebConv.preprocess calls scipy's eigh(eigvals=...), gone from SciPy >= 1.14; the rescaled
    # Laplacian 2 L / lambda_max - I is built with lambda_max = 2, its upper bound.
    expected = np.asarray(normalized_laplacian(a)) - np.eye(478)
    np.testing.assert_allclose(gnn.graph_adjacency("cheb").toarray(), expected, atol=1e-5)


def test_coarsening_pairs_neighbours_and_covers_every_node_once() -> None:
    edges = {tuple(e) for e in topology.mesh_edges().tolist()}
    pyramid = gnn.graph_pyramid(2)
    assert [n for n, _, _ in pyramid] == [478, len(pyramid[0][2]), len(pyramid[1][2])]
    for n, level_edges, clusters in pyramid[:-1]:
        members = clusters.ravel()
        singles = clusters[:, 0] == clusters[:, 1]
        assert sorted(np.concatenate([clusters[~singles].ravel(), clusters[singles, 0]]).tolist()) == list(range(n))
        level_set = {tuple(e) for e in level_edges.tolist()}
        assert all(tuple(sorted(p)) in level_set for p in clusters[~singles].tolist())
        assert members.max() < n and n / 2 <= len(clusters) < n
    assert [tuple(e) for e in pyramid[0][1].tolist()] == sorted(edges)
    # deterministic: rebuilt identically (a saved model relies on it)
    again = gnn.graph_pyramid(2)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(pyramid, again))


# ------------------------------------------------------------------------------------------------
# Node features


@pytest.fixture(scope="module")
def real_meshes(landmarker) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Landmarks, blendshapes and image sizes of a few FER-2013 validation faces."""
    meshes = [m for paths in sample_images(FER_VAL, 2).values() for p in paths for m in landmarker.detect(p)[:1]]
    assert len(meshes) >= 8
    return (np.stack([m.landmarks for m in meshes]), np.stack([m.blendshapes for m in meshes]),
            np.array([m.image_size for m in meshes], dtype=np.float32))


@pytest.mark.parametrize("feature_set", ["graph_aligned", "nose_relative"])
def test_mirrored_features_equal_the_features_of_mirrored_landmarks(real_meshes, feature_set: str) -> None:
    lm, bs, sizes = real_meshes
    x = features.compute(feature_set, lm, bs, sizes)
    expected = features.compute(feature_set, features.mirror_landmarks(lm), bs, sizes)
    assert x.shape == (len(lm), 478 * 3)
    np.testing.assert_allclose(gnn.mirror_node_features(x), expected, atol=1e-5)
    np.testing.assert_allclose(gnn.mirror_node_features(gnn.mirror_node_features(x)), x, atol=1e-6)
    assert not np.allclose(gnn.mirror_node_features(x), x, atol=1e-3)


def test_aligned_node_features_ignore_head_rotation(real_meshes) -> None:
    lm, bs, sizes = real_meshes
    nodes = features.graph_node_features(lm, sizes)
    aligned = features.graph_node_features_aligned(lm, sizes)
    theta = np.deg2rad(25)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]], dtype=np.float32)
    turned = (nodes @ rot.T) * 0.2 + 0.5  # rolled, shrunk and moved: a valid landmark array again
    np.testing.assert_allclose(features.graph_node_features_aligned(turned), aligned, atol=1e-4)
    assert not np.allclose(features.graph_node_features(turned), nodes, atol=1e-2)
    np.testing.assert_allclose(np.linalg.norm(aligned, axis=-1), np.linalg.norm(nodes, axis=-1), atol=1e-4)
    assert aligned[:, topology.NOSE_TIP].tolist() == [[0.0, 0.0, 0.0]] * len(lm)


def test_class_weights() -> None:
    y = np.array([0] * 90 + [1] * 10)
    assert gnn.class_weights(y, 2, 0.0) == {0: 1.0, 1: 1.0}
    w = gnn.class_weights(y, 2, 1.0)
    assert w[0] * 90 == pytest.approx(w[1] * 10) == pytest.approx(50)


def test_unknown_recipe_option_is_refused() -> None:
    with pytest.raises(MeshferError, match="unknown gnn option 'epoch'"):
        gnn._split_options({"epoch": 3})
    hp, training, other = gnn._split_options({"epochs": 3, "conv": "gin", "transfer_dir": "x"})
    assert hp == {"conv": "gin"} and training == {"epochs": 3} and other == {"transfer_dir": "x"}


# ------------------------------------------------------------------------------------------------
# Saving and loading (TensorFlow from here on)

TINY = {"channels": [4, 4], "readout_channels": 2, "dense": [8], "dropout": 0.1}


@pytest.fixture(scope="module")
def tiny_model(real_meshes, tmp_path_factory: pytest.TempPathFactory):
    """A tiny GNN fitted for two epochs on jittered copies of real faces, saved with its card."""
    lm, bs, sizes = real_meshes
    rng = np.random.default_rng(0)
    x = features.compute(gnn.DEFAULT_FEATURE_SET, lm, bs, sizes)
    y = np.arange(len(x)) % len(LABELS)
    reps = np.repeat(np.arange(len(x)), 8)
    xs = x[reps] + rng.normal(0, 0.01, (len(reps), x.shape[1])).astype(np.float32)
    fit = gnn.fit_gnn(xs, y[reps], x, y, len(LABELS), TINY, x_train_mirror=gnn.mirror_node_features(xs),
                      verbose=0, epochs=2, batch_size=16)
    folder = tmp_path_factory.mktemp("gnn-model")
    card = gnn.save_gnn(fit.model, folder, name="tiny_gnn", labels=LABELS, hparams=TINY, metrics={"accuracy": 0.0},
                        extra={"history": fit.history})
    return fit, card, x


def test_save_then_load_gives_the_same_predictions(tiny_model) -> None:
    from meshfer.models import ModelCard, load_model

    fit, card, x = tiny_model
    assert card.model_path.name == "tiny_gnn.weights.h5" and card.model_path.stat().st_size < 5_000_000
    assert card.format == gnn.FORMAT and card.n_features == 1434 and card.labels == LABELS
    assert card.extra["hparams"]["channels"] == [4, 4] and card.versions.get("spektral")
    assert fit.epochs_run == 2 and len(fit.history["val_accuracy"]) == 2
    before = gnn.GNNClassifier(fit.model, gnn.DraftCard("tiny_gnn", LABELS, gnn.DEFAULT_FEATURE_SET))
    loaded = load_model(ModelCard.load(card.path))  # checks the SHA-256, dispatches to load_gnn
    assert isinstance(loaded, gnn.GNNClassifier)
    p0, p1 = before.predict_proba(x), loaded.predict_proba(x)
    assert p1.shape == (len(x), len(LABELS))
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p0, p1, atol=1e-6)
    assert list(loaded.predict(x)) == list(before.predict(x))
    assert loaded.predict_proba(x[0]).shape == (1, len(LABELS))  # one face as a 1-D vector
    with pytest.raises(ValueError, match="expects 1434 features"):
        loaded.predict_proba(x[:, :100])


@pytest.mark.parametrize("change", [
    {"conv": "gcn"}, {"conv": "gin"}, {"conv": "cheb"}, {"conv": "arma"},
    {"channels": [4, 4, 4], "pool": True}, {"readout": "meanmax", "jk": False}, {"readout": "attention"},
    {"readout": "sum", "batch_norm": True}, {"node_embedding": 2, "readout_channels": 0},
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_every_architecture_option_builds_and_runs(change: dict) -> None:
    model = gnn.build_gnn(3, {**TINY, **change})
    out = model(np.random.default_rng(0).normal(size=(2, 1434)).astype(np.float32)).numpy()
    assert out.shape == (2, 3) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    kernels = [w.numpy() for w in model.trainable_weights if w.shape.rank == 2 and w.shape[0] > 1]
    assert all(not np.allclose(a, b) for i, a in enumerate(kernels) for b in kernels[i + 1:] if a.shape == b.shape)


def test_unknown_architecture_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown graph convolution"):
        gnn.build_gnn(3, {"conv": "gat"})
    with pytest.raises(ValueError, match="unknown GNN hyper-parameters: width"):
        gnn.build_gnn(3, {"width": 3})


def test_mirror_tta_averages_face_and_mirror(tiny_model) -> None:
    fit, card, x = tiny_model
    plain = gnn.GNNClassifier(fit.model, card, mirror_tta=False)
    tta = gnn.GNNClassifier(fit.model, card, mirror_tta=True)
    expected = 0.5 * (plain.predict_proba(x) + plain.predict_proba(gnn.mirror_node_features(x)))
    np.testing.assert_allclose(tta.predict_proba(x), expected, atol=1e-6)


def test_existing_files_are_kept_unless_overwrite(tiny_model) -> None:
    fit, card, _ = tiny_model
    with pytest.raises(ModelError, match="exists"):
        gnn.save_gnn(fit.model, card.path.parent, name="tiny_gnn", labels=LABELS, hparams=TINY)
    again = gnn.save_gnn(fit.model, card.path.parent, name="tiny_gnn", labels=LABELS, hparams=TINY, overwrite=True)
    assert again.model_path == card.model_path


def test_a_card_for_another_graph_or_a_changed_file_is_refused(tiny_model, tmp_path: Path) -> None:
    from dataclasses import replace

    from meshfer.models import load_model

    _, card, _ = tiny_model
    other = replace(card, extra={**card.extra, "graph": {"n_nodes": 468, "n_edges": 1326}})
    with pytest.raises(ModelError, match="another face graph"):
        gnn.load_gnn(other)
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not hdf5")
    bad = replace(card, file=str(broken), sha256=__import__("meshfer.assets", fromlist=["x"]).sha256_of(broken))
    with pytest.raises(ModelError, match="cannot load the GNN weights"):
        load_model(bad)


def test_predictor_runs_a_gnn_card_on_an_image(tiny_model) -> None:
    from meshfer.landmarks import LandmarkerOptions
    from meshfer.predict import Predictor

    _, card, _ = tiny_model
    image = sample_images(FER_VAL, 1)["happy"][0]
    with Predictor(expression=card.path, eyes=None, gaze=None, mouth=None,
                   landmarker=LandmarkerOptions(model_path=os.environ["MESHFER_LANDMARKER"])) as predictor:
        result = predictor.predict_image(image)
    assert result.face and result.prediction.expression.label in LABELS
    assert sum(result.prediction.expression.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


# ------------------------------------------------------------------------------------------------
# TensorFlow only where the GNN needs it


def test_importing_meshfer_gnn_touches_neither_tensorflow_nor_the_environment() -> None:
    proc = _python(
        "import os, sys, json, meshfer, meshfer.gnn, meshfer.models\n"
        "print(json.dumps(['tensorflow' in sys.modules, 'spektral' in sys.modules, os.environ.get('TF_USE_LEGACY_KERAS')]))"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [False, False, None]


def test_default_prediction_does_not_import_tensorflow() -> None:
    """Predictor with the default models, then ``meshfer predict`` (default model) in one process."""
    image = sample_images(FER_VAL, 1)["happy"][0]
    code = f"""
import json, sys
import meshfer
from meshfer.models import default_card
from meshfer.predict import Predictor
from meshfer.cli import main
with Predictor() as p:
    r = p.predict_image({str(image)!r})
rc = main(["predict", {str(image)!r}, "--json"])
card = default_card("expression")
print("RESULT " + json.dumps({{"tf": "tensorflow" in sys.modules, "rc": rc, "face": r.face,
                             "expression": card.name if card else None, "format": card.format if card else None}}))
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["rc"] == 0 and result["face"]
    assert result["format"] != gnn.FORMAT, "the default expression model must not need TensorFlow"
    assert result["tf"] is False


def test_tensorflow_started_with_keras_3_gives_a_clear_error() -> None:
    code = (
        "import tensorflow\n"
        "from meshfer.errors import MeshferError\n"
        "from meshfer.gnn import import_tensorflow\n"
        "try:\n    import_tensorflow()\n    print('NO ERROR')\nexcept MeshferError as exc:\n    print('ERROR', exc)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ERROR") and "TF_USE_LEGACY_KERAS=1" in last


# ------------------------------------------------------------------------------------------------
# The shipped GNN


def test_shipped_gnn_card() -> None:
    from meshfer.models import default_card, get_card, verify_file

    card = get_card("gnn", "expression")
    assert card.format == gnn.FORMAT and not card.default
    fallback = default_card("expression")  # never the GNN, even when no expression model is marked default
    assert fallback is None or fallback.format != gnn.FORMAT
    assert card.labels == LABELS and card.n_features == 1434
    assert verify_file(card).stat().st_size < 5_000_000
    for key in ("accuracy", "accuracy_on_faces", "coverage", "macro_f1", "muxspace_macro_f1"):
        assert 0.0 < card.metrics[key] <= 1.0
    assert card.extra["train_seconds"] > 0 and card.extra["best_epoch"] >= 1
    assert {"tensorflow", "tf-keras", "spektral"} <= set(card.versions)


@pytest.mark.slow
def test_cli_predict_and_evaluate_with_the_shipped_gnn(small_dataset: Path) -> None:
    """A fresh process (TF_USE_LEGACY_KERAS unset) runs the GNN through the CLI."""
    image = next((small_dataset / "face_happy").iterdir())
    proc = subprocess.run([sys.executable, "-m", "meshfer", "predict", "--model", "gnn", "--eyes", "none",
                           "--gaze", "none", "--mouth", "none", str(image), "--json"],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["face"] and out["expression"]["label"] in LABELS
    proc = subprocess.run([sys.executable, "-m", "meshfer", "evaluate", str(small_dataset), "--model", "gnn",
                           "--json", "--no-progress", "--workers", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(proc.stdout)
    assert metrics["model"] == "gnn" and metrics["n_images"] == 3 * len(LABELS)
    assert metrics["labels"] == LABELS and 0.0 <= metrics["accuracy"] <= 1.0
