"""Model cards, the registry and the ONNX file formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meshfer.errors import ModelError, UnknownModelError
from meshfer.models import TASKS, ModelCard, default_card, get_card, list_models, load_model


def test_every_task_has_one_lean_default() -> None:
    for task in TASKS:
        card = default_card(task)
        assert card is not None and card.default and card.format in ("onnx", "onnx-hybrid"), task  # ONNX Runtime only
        assert sum(c.default for c in list_models(task)) == 1, task


def test_every_shipped_card_is_complete_and_matches_its_file() -> None:
    from meshfer.models import verify_file

    for card in list_models():
        verify_file(card)
        assert card.n_features > 0 and card.feature_set and card.created and card.versions.get("meshfer")
        assert card.training_data and card.metrics
        assert card.model_path.stat().st_size < 6 * 2**20


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_card("nope", "expression")
    message = str(err.value)
    assert "nope" in message and "ensemble" in message and "gnn" in message and "eyes" not in message
    with pytest.raises(ModelError, match="not a mouth model"):
        get_card("eyes", "mouth")


@pytest.mark.parametrize("compress", [False, True])
def test_onnx_export_roundtrip_plain_and_gzip(tmp_path: Path, compress: bool) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from meshfer.models.export import save_onnx_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    card = save_onnx_model(est, tmp_path, name="tiny", task="mouth", feature_set="eye_state_geometry", check_features=x,
                           labels=["a", "b", "c"], compress=compress, training_data={"n": 300})
    assert card.file == ("tiny.onnx.gz" if compress else "tiny.onnx")
    loaded = load_model(tmp_path / "tiny.json")
    np.testing.assert_allclose(loaded.predict_proba(x), est.predict_proba(x), atol=1e-6)
    assert loaded.predict(x[:3]).tolist() == [["a", "b", "c"][i] for i in est.predict(x[:3])]
    with pytest.raises(ModelError, match="exists"):
        save_onnx_model(est, tmp_path, name="tiny", task="mouth", feature_set="eye_state_geometry", check_features=x,
                        labels=["a", "b", "c"], compress=not compress)
    again = save_onnx_model(est, tmp_path, name="tiny", task="mouth", feature_set="eye_state_geometry", check_features=x,
                            labels=["a", "b", "c"], compress=not compress, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tiny.json", again.file])
    # An export that fails its check leaves the model it was to replace as it was.
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ModelError, match="disagrees"):
        save_onnx_model(est, tmp_path, name="tiny", task="mouth", feature_set="eye_state_geometry", check_features=x,
                        labels=["a", "b", "c"], compress=compress, overwrite=True, tolerance=-1.0)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    np.testing.assert_allclose(load_model(tmp_path / "tiny.json").predict_proba(x), est.predict_proba(x), atol=1e-6)


def test_malformed_cards_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelError, match="bad.json"):
        ModelCard.load(bad)
    bad.write_text(json.dumps({"name": "x", "task": "expression"}))
    with pytest.raises(ModelError, match="lacks"):
        ModelCard.load(bad)


@pytest.mark.parametrize("hidden", [(16,), (16, 8)])
def test_mlp_vote_is_exported_as_a_folded_graph(tmp_path: Path, hidden: tuple[int, ...]) -> None:
    import onnx

    from meshfer.classifiers import build_pipeline, fit_pipeline
    from meshfer.models.export import save_onnx_model
    from meshfer.models.fold import folded_onnx_bytes

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 52))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0.5)
    est = fit_pipeline(build_pipeline("mlp_ensemble", n_components=8, hidden=hidden, n_members=3, max_iter=30), x, y)
    card = save_onnx_model(est, tmp_path, name="vote", task="expression", feature_set="blendshapes", check_features=x,
                           labels=["a", "b", "c", "d"], dtype=np.float32)
    graph = onnx.load(str(card.model_path)).graph
    assert len(graph.node) <= 12 + 3 * len(hidden)  # matrix products, not one operator per step and member
    np.testing.assert_allclose(load_model(card.path).predict_proba(x), est.predict_proba(x), atol=1e-5)
    # Anything else goes through skl2onnx.
    svm = build_pipeline("svm", n_components=4, calibration_folds=2).fit(x, y)
    assert folded_onnx_bytes(svm, x.shape[1]) is None
