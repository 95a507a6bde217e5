"""Expression models: train -> save -> load -> identical predictions, corrupt model files, the
evaluation protocol, the recipes and the shipped models. Small real data (FER-2013 images
through the real MediaPipe landmarker)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import FER_TRAIN, FER_VAL, LABELS, LANDMARKER

PER_CLASS = 8


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory):
    """Meshes of a few FER-2013 train and validation images per class (cached for the module)."""
    from meshfer.extract import extract_folder
    from meshfer.landmarks import LandmarkerOptions

    cache = tmp_path_factory.mktemp("meshes")
    options = LandmarkerOptions(model_path=LANDMARKER)
    train = extract_folder(FER_TRAIN, cache, per_class=PER_CLASS, workers=1, options=options, progress=False)
    val = extract_folder(FER_VAL, cache, per_class=4, workers=1, options=options, progress=False)
    return train, val


@pytest.mark.parametrize(
    "kind, params, feature_set",
    [
        ("svm", {"n_components": 10, "C": 5.0}, "nose_relative"),
        ("logreg", {}, "blendshapes_distances"),
        ("mlp", {"n_components": 20, "hidden": (16,), "max_iter": 30}, "blendshapes_keypoints"),
        ("mlp_ensemble", {"n_components": 20, "hidden": (16,), "max_iter": 20, "n_members": 2}, "blendshapes_keypoints"),
    ],
)
def test_train_save_load_identical_predictions(tables, tmp_path: Path, kind, params, feature_set) -> None:
    from meshfer.models import load_model
    from meshfer.models.export import save_onnx_model
    from meshfer.training.expression import ExpressionSpec, build, fit, prepare

    train, val = tables
    spec = ExpressionSpec(feature_set, kind, params, mirror=True)
    data = prepare(train, feature_set, mirror=True)
    assert len(data.x) == 2 * int(train.found.sum())
    model = fit(build(spec), data)
    check = prepare(val, feature_set)
    card = save_onnx_model(model, tmp_path, name=f"tiny_{kind}", task="expression", feature_set=feature_set,
                           check_features=check.x, labels=LABELS)
    loaded = load_model(card.path)
    assert loaded.card.labels == LABELS and loaded.card.n_features == check.x.shape[1]
    expected = model.predict_proba(check.x)
    got = loaded.predict_proba(check.x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert list(loaded.predict(check.x)) == [LABELS[i] for i in model.predict(check.x)]
    # The same through the Predictor, from the meshes.
    from meshfer.predict import Predictor

    predictor = Predictor(expression=card.path, eyes=None, gaze=None, mouth=None)
    faces = val.faces()
    out = predictor.predict_batch(faces.landmarks, faces.blendshapes, faces.image_sizes)
    assert [p.expression.label for p in out] == list(loaded.predict(check.x))


@pytest.fixture(scope="module")
def tiny_model(tables, tmp_path_factory: pytest.TempPathFactory):
    from meshfer.models.export import save_onnx_model
    from meshfer.training.expression import EXPRESSION_MODELS, build, fit, prepare

    train, val = tables
    spec = EXPRESSION_MODELS["logreg"]
    model = fit(build(spec), prepare(train, spec.feature_set))
    folder = tmp_path_factory.mktemp("model")
    return save_onnx_model(model, folder, name="tiny", task="expression", feature_set=spec.feature_set,
                           check_features=prepare(val, spec.feature_set).x, labels=LABELS)


def test_corrupt_model_file_is_a_clear_error(tiny_model, tmp_path: Path) -> None:
    from meshfer.errors import ModelError
    from meshfer.models import load_model

    folder = tmp_path / "copy"
    shutil.copytree(tiny_model.path.parent, folder)
    onnx = folder / "tiny.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"tiny\.onnx: model file is corrupt"):
        load_model(folder / "tiny.json")
    # Damaged but with a card that matches its hash: ONNX Runtime refuses it, named.
    from meshfer.assets import sha256_of

    onnx.write_bytes(b"not an onnx model at all")
    card = json.loads((folder / "tiny.json").read_text())
    card["sha256"] = sha256_of(onnx)
    (folder / "tiny.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"tiny\.onnx: cannot load ONNX model"):
        load_model(folder / "tiny.json")
    onnx.unlink()
    with pytest.raises(ModelError, match=r"tiny\.onnx: model file of 'tiny' not found"):
        load_model(folder / "tiny.json")


def test_evaluation_counts_faceless_images_as_wrong(tables) -> None:
    from meshfer.training.expression import evaluate, prepare

    _, val = tables
    data = prepare(val, "blendshapes")

    class Oracle:
        """Predicts the true label of every face."""

        def predict(self, x):
            return data.y

    metrics = evaluate(Oracle(), data)
    n, faces = len(val), int(val.found.sum())
    assert metrics["n_images"] == n and metrics["n_faces"] == faces
    assert metrics["accuracy_on_faces"] == 1.0
    assert metrics["accuracy"] == pytest.approx(faces / n)
    # Drop one face: it becomes a miss, never silently left out.
    lost = val.subset(np.arange(len(val)))
    status = lost.status.copy()
    status[np.flatnonzero(lost.found)[0]] = "no_face"
    data2 = prepare(replace(lost, status=status), "blendshapes")

    class Oracle2:
        def predict(self, x):
            return data2.y

    m2 = evaluate(Oracle2(), data2)
    assert m2["n_images"] == n and m2["accuracy"] == pytest.approx((faces - 1) / n)
    assert m2["confusion"][int(data.y_all[np.flatnonzero(lost.found)[0]])][-1] >= 1


def test_labels_outside_the_model_are_left_out(tables) -> None:
    from meshfer.training.expression import evaluate, prepare

    _, val = tables
    data = prepare(val, "blendshapes", labels=("happy", "sad"))
    assert set(data.y) <= {0, 1}

    class Always0:
        def predict(self, x):
            return np.zeros(len(x), dtype=int)

    m = evaluate(Always0(), data)
    assert m["n_images"] == int(np.isin(val.labels, ["happy", "sad"]).sum())
    assert m["excluded"] == len(val) - m["n_images"]


def test_recipe_writes_card_with_validation_and_photo_metrics(tables, tmp_path: Path) -> None:
    from meshfer.models import load_model
    from meshfer.training import RECIPES, TrainConfig, get_recipe

    assert {"svm", "blendshapes", "logreg"} <= set(RECIPES)
    config = TrainConfig(
        train_dir=FER_TRAIN, val_dir=FER_VAL, output_dir=tmp_path / "out", cache_dir=tmp_path / "meshes",
        workers=1, limit_per_class=3, landmarker=LANDMARKER,
        options={"photos_dir": str(FER_VAL), "photos_name": "again", "n_components": 5},
    )
    card = get_recipe("svm")("svm", config)
    assert card.path == (tmp_path / "out" / "svm.json").resolve()
    for key in ("accuracy", "accuracy_on_faces", "coverage", "macro_f1", "again_macro_f1"):
        assert 0.0 <= card.metrics[key] <= 1.0
    assert card.metrics["n_images"] == 21
    assert card.metrics["unseen_n_images"] + card.metrics["copies_of_training_images"] == 21
    assert 0.0 <= card.metrics["unseen_accuracy"] <= 1.0
    assert card.training_data["train_images"] == 21
    assert card.extra["params"]["n_components"] == 5
    assert card.feature_set == "nose_relative" and card.labels == LABELS
    assert card.landmarker_sha256
    load_model(card.path)
    from meshfer.errors import ModelError

    with pytest.raises(ModelError, match="exists"):
        get_recipe("svm")("svm", config)


def test_shipped_expression_models() -> None:
    from meshfer import features
    from meshfer.models import default_card, list_models, load_model
    from meshfer.training.expression import DEFAULT_MODEL, EXPRESSION_MODELS

    cards = {c.name: c for c in list_models("expression")}
    assert set(EXPRESSION_MODELS) <= set(cards)
    assert cards[DEFAULT_MODEL].metrics["macro_f1"] == max(cards[n].metrics["macro_f1"] for n in EXPRESSION_MODELS)
    assert default_card("expression").name == "hybrid"  # the mesh-only default gave way (tests/test_hybrid.py)
    rng = np.random.default_rng(0)
    lm = (0.5 + 0.1 * rng.standard_normal((2, 478, 3))).astype(np.float32)
    bs = rng.uniform(size=(2, 52)).astype(np.float32)
    for name in EXPRESSION_MODELS:
        card = cards[name]
        assert card.labels == LABELS
        assert card.model_path.stat().st_size < 5_000_000
        for key in ("accuracy", "accuracy_on_faces", "coverage", "macro_f1", "muxspace_macro_f1", "unseen_accuracy",
                    "unseen_macro_f1"):
            assert 0.0 < card.metrics[key] < 1.0
        # the same unseen validation images for every model, whatever each left out of its training
        assert (card.metrics["unseen_n_images"], card.metrics["copies_of_training_images"]) == (
            cards["hybrid"].metrics["unseen_n_images"], cards["hybrid"].metrics["copies_of_training_images"])
        model = load_model(card)
        proba = model.predict_proba(features.compute(card.feature_set, lm, bs, np.array([[48, 48]] * 2)))
        assert proba.shape == (2, len(LABELS))
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)


def test_unseen_features_leave_out_copies_of_training_images(small_dataset: Path, tmp_path: Path) -> None:
    from meshfer.training.expression import cached_features, unseen_features

    train = tmp_path / "train" / "face_sad"
    train.mkdir(parents=True)
    copied = sorted((small_dataset / "face_sad").iterdir())[0]
    shutil.copy2(copied, train / "renamed.jpg")
    cache = tmp_path / "meshes"
    everything = cached_features(small_dataset, "blendshapes", mesh_cache=cache, progress=False)
    unseen = unseen_features(small_dataset, train.parent, "blendshapes", mesh_cache=cache, progress=False)
    assert len(unseen.y_all) == len(everything.y_all) - 1
    sad = LABELS.index("sad")
    assert (unseen.y_all == sad).sum() == (everything.y_all == sad).sum() - 1


def _copy_tree(src: Path, dst: Path, per_class: int) -> Path:
    for folder in sorted(src.glob("face_*")):
        (dst / folder.name).mkdir(parents=True)
        for f in sorted(folder.iterdir())[:per_class]:
            shutil.copy2(f, dst / folder.name / f.name)
    return dst


def test_recipe_leaves_copies_of_validation_images_out_of_training(small_dataset: Path, tmp_path: Path) -> None:
    from meshfer.training import TrainConfig, get_recipe

    train = _copy_tree(FER_TRAIN, tmp_path / "train", 3)
    shutil.copy2(sorted((small_dataset / "face_sad").iterdir())[0], train / "face_sad" / "copy_of_validation.jpg")
    config = TrainConfig(
        train_dir=train, val_dir=small_dataset, output_dir=tmp_path / "out", cache_dir=tmp_path / "meshes",
        workers=1, landmarker=LANDMARKER, options={"n_components": 5, "max_iter": 5, "n_members": 1, "hidden": (8,)},
    )
    card = get_recipe("ensemble")("ensemble", config)
    assert card.training_data["left_out_copies_of_validation_images"] == 1
    assert card.training_data["train_images"] == 21
    assert card.training_data["train_dir"] == f"{tmp_path.name}/train"  # no paths of the machine that trained it
    # unseen_*: the validation images without a copy in the training folder, left out of training or not
    assert card.metrics["copies_of_training_images"] == 1 and card.metrics["unseen_n_images"] == 20
    kept = replace(config, output_dir=tmp_path / "kept", options={**config.options, "exclude_copies": "false"})
    card = get_recipe("ensemble")("ensemble", kept)
    assert card.training_data["left_out_copies_of_validation_images"] == 0
    assert card.training_data["train_images"] == 22 and card.metrics["copies_of_training_images"] == 1
    assert card.metrics["unseen_n_images"] == 20


def test_selection_split_keeps_duplicates_together_and_validation_out(tables, tmp_path: Path) -> None:
    from meshfer.datasets import copies_of, duplicate_groups
    from meshfer.meshtable import MeshTable
    from meshfer.training.expression import selection_split

    train, val = tables
    # The same picture twice under two names, and one validation image in the training data.
    twin = tmp_path / "twin.jpg"
    shutil.copy2(train.paths[0], twin)
    leak = tmp_path / "leak.jpg"
    shutil.copy2(val.paths[0], leak)
    extra = train.subset([0, 1])
    paths = np.array([str(twin), str(leak)])
    extra = replace(extra, paths=paths, groups=paths)
    data = MeshTable.concat([train, extra])
    groups = duplicate_groups(data.paths, data.groups)
    assert groups[0] == groups[len(train)] and len(set(groups)) == len(data) - 1
    for seed in range(6):
        fit_part, held = selection_split(data, val, test_size=0.3, seed=seed)
        assert len(fit_part) + len(held) == len(data) - 1
        assert not copies_of(list(fit_part.paths) + list(held.paths), val.paths).any()
        sides = {p: "fit" for p in fit_part.paths} | {p: "held" for p in held.paths}
        assert sides[str(train.paths[0])] == sides[str(twin)]
        assert set(held.labels) == set(LABELS)
