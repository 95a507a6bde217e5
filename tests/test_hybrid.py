"""The hybrid expression network: crops + mesh in, trained with Keras, exported to ONNX and run
with ONNX Runtime alone; the recipe behind `meshfer train hybrid`; the shipped model.

Real faces throughout (a few FER-2013 and photo images per class, real MediaPipe). The Hybrid/
notebooks run top to bottom in tests/test_notebooks.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FER_TRAIN, FER_VAL, LABELS, LANDMARKER, PHOTOS, REPO, sample_images

from meshfer.errors import MeshferError, ModelError

# 16 channels at least: TensorFlow 2.21's oneDNN kernels corrupt memory with 8-channel separable
# convolutions on some AVX-512 processors (a "malloc assertion failure" or a segfault in tf_Compute)
TINY = {"stem": 16, "stages": [16, 32], "mesh_units": 16, "fusion_units": 16}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory):
    """Meshes (with crops) of 3 FER-2013 validation images and 2 photos per class."""
    from meshfer.datasets import scan_paths
    from meshfer.extract import extract

    out = {}
    for name, root, n in (("fer", FER_VAL, 3), ("photos", PHOTOS, 2)):
        paths = [p for files in sample_images(root, n).values() for p in files]
        table = extract(scan_paths(paths), workers=1, progress=False)
        labels = np.array([p.parent.name[5:] for p in map(Path, table.paths)])
        from dataclasses import replace

        out[name] = replace(table, labels=labels, meta={**table.meta, "labels": LABELS})
    return out


@pytest.fixture(scope="module")
def trained(tables, tmp_path_factory: pytest.TempPathFactory):
    """A tiny hybrid network fitted for two epochs, and its ONNX export."""
    from meshfer.hybrid import HybridData, fit_hybrid, prepare_hybrid
    from meshfer.training.hybrid import HYBRID_FEATURE_SET, export_hybrid

    fer = prepare_hybrid(tables["fer"], HYBRID_FEATURE_SET, LABELS, "fer2013")
    photos = prepare_hybrid(tables["photos"], HYBRID_FEATURE_SET, LABELS, "photos")
    data = HybridData.concat([fer, photos])
    result = fit_hybrid(data, fer, TINY, {"epochs": 2, "batch_size": 8, "threads": 1}, progress=False)
    out = tmp_path_factory.mktemp("hybrid-model")
    card, scores = export_hybrid(
        result.model, out, name="tiny_hybrid", labels=LABELS, feature_set=HYBRID_FEATURE_SET,
        check_crops=data.crops, check_features=data.x, crop=tables["fer"].meta["crop"],
        evaluate_on={"photos": tables["photos"]},
    )
    card.save(out / "tiny_hybrid.json")
    return result, card, data, scores, tables["photos"]


def _tables_photos(trained):
    return trained[4]


def test_fit_keeps_a_history_and_the_best_epoch(trained) -> None:
    result, *_ = trained
    assert len(result.history) == 2 and 0 <= result.best_epoch < 2
    assert {"loss", "held_out_macro_f1", "held_out_accuracy"} <= set(result.history[0])


def test_onnx_export_gives_the_keras_probabilities_on_real_faces(trained) -> None:
    from meshfer.hybrid import predict_hybrid
    from meshfer.models import load_model

    result, card, data, *_ = trained
    model = load_model(card)  # through the registry: the file's SHA-256 is checked
    assert type(model).__name__ == "HybridOnnxModel" and model.needs_crops
    for crops, x in ((data.crops, data.x), (data.crops[:, :, ::-1].copy(), data.x_mirror)):
        expected = predict_hybrid(result.model, crops, x)
        got = model.predict_proba(x, crops)
        assert got.shape == (len(data), len(LABELS))
        assert np.max(np.abs(expected - got)) < 1e-4
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert card.crop["size"] == 48 and card.format == "onnx-hybrid"
    assert card.extra["export_max_difference"] < 1e-4


def test_mirror_averaging_is_exported_and_checked(trained, tmp_path: Path) -> None:
    from meshfer.evaluation import evaluate_table
    from meshfer.hybrid import predict_hybrid
    from meshfer.models import load_model
    from meshfer.training.hybrid import export_hybrid

    result, card, data, *_ = trained
    tta, _ = export_hybrid(result.model, tmp_path, name="tta", labels=LABELS, feature_set=card.feature_set,
                           check_crops=data.crops, check_features=data.x, crop=card.crop, mirror_tta=True,
                           check_mirrored=data.x_mirror)
    tta.save(tmp_path / "tta.json")
    model = load_model(tmp_path / "tta.json")
    assert model.needs_mirror
    expected = 0.5 * (predict_hybrid(result.model, data.crops, data.x)
                      + predict_hybrid(result.model, data.crops[:, :, ::-1], data.x_mirror))
    assert np.max(np.abs(model.predict_proba(data.x, data.crops, data.x_mirror) - expected)) < 1e-4
    with pytest.raises(ValueError, match="mirror"):
        model.predict_proba(data.x, data.crops)
    # the features of the mirrored faces, computed by the model itself from the landmarks
    metrics = evaluate_table(model, _tables_photos(trained))
    assert metrics["n_images"] > 0
    from meshfer.predict import Predictor

    with Predictor(expression=tmp_path / "tta.json", eyes=None, gaze=None, mouth=None) as predictor:
        result_image = predictor.predict_image(sorted((PHOTOS / "face_happy").iterdir())[0])
    assert result_image.face and set(result_image.prediction.expression.probabilities) == set(LABELS)


def test_large_inputs_run_in_parts_with_the_same_probabilities(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    import meshfer.models.onnx as onnx_models
    from meshfer.models import load_model

    _, card, data, *_ = trained
    model = load_model(card)
    whole = model.predict_proba(data.x, data.crops)
    size = 3
    while len(data) % size == 0:
        size += 1
    monkeypatch.setattr(onnx_models, "_BATCH", size)  # several parts, the last one shorter
    assert len(data) > 2 * size
    assert np.allclose(model.predict_proba(data.x, data.crops), whole, atol=1e-6)


def test_hybrid_needs_its_crops(trained, tables) -> None:
    from dataclasses import replace

    from meshfer.evaluation import evaluate_table
    from meshfer.models import load_model

    _, card, data, scores, _ = trained
    model = load_model(card)
    with pytest.raises(ValueError, match="crops"):
        model.predict_proba(data.x[:2])
    with pytest.raises(ValueError, match="48x48"):
        model.predict_proba(data.x[:2], np.zeros((2, 32, 32), np.uint8))
    no_crops = replace(tables["photos"], crops=np.zeros((len(tables["photos"]), 0, 0), np.uint8))
    with pytest.raises(MeshferError, match="crops"):
        evaluate_table(model, no_crops)
    assert scores["photos"]["n_images"] == len(tables["photos"])


def test_existing_model_is_kept_unless_overwrite(trained) -> None:
    from meshfer.training.hybrid import export_hybrid

    result, card, data, *_ = trained
    before = card.model_path.read_bytes()
    with pytest.raises(ModelError, match="exists"):
        export_hybrid(result.model, card.model_path.parent, name=card.name, labels=LABELS,
                      feature_set=card.feature_set, check_crops=data.crops[:4], check_features=data.x[:4],
                      crop=card.crop)
    assert card.model_path.read_bytes() == before


def test_unsupported_layers_are_refused_by_name() -> None:
    from meshfer.hybrid import import_keras
    from meshfer.models.keras_onnx import keras_to_onnx_bytes

    _, keras = import_keras(1)
    inp = keras.Input((4,), name="mesh")
    out = keras.layers.LayerNormalization(name="odd")(inp)
    with pytest.raises(ModelError, match="odd"):
        keras_to_onnx_bytes(keras.Model(inp, out))


def test_predictor_runs_the_hybrid_on_images(trained) -> None:
    from meshfer.predict import Predictor

    _, card, *_ = trained
    image = sorted((PHOTOS / "face_happy").iterdir())[0]
    with Predictor(expression=card.path, eyes=None, gaze=None, mouth=None) as predictor:
        assert predictor.landmarker_options.crop is not None
        result = predictor.predict_image(image)
    assert result.face and result.mesh is not None and result.mesh.crop.shape == (48, 48)
    d = result.to_dict()
    assert set(d) == {"image", "face", "expression"}
    assert set(d["expression"]) == {"label", "probabilities"} and set(d["expression"]["probabilities"]) == set(LABELS)


def test_cli_predict_json_schema_with_the_hybrid(trained) -> None:
    _, card, *_ = trained
    image = sorted((PHOTOS / "face_surprised").iterdir())[0]
    proc = subprocess.run([sys.executable, "-m", "meshfer", "predict", str(image), "--json", "--model", str(card.path)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["face"] is True and set(out["expression"]["probabilities"]) == set(LABELS)
    assert {"eyes", "gaze", "mouth"} <= set(out)


@pytest.mark.slow
def test_meshfer_train_hybrid_writes_a_checked_model_and_card(tmp_path: Path) -> None:
    out = tmp_path / "models"
    args = [sys.executable, "-m", "meshfer", "train", "hybrid", str(FER_TRAIN), "--val", str(FER_VAL), "-o", str(out),
            "--limit-per-class", "6", "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--json",
            "--option", "epochs=2", "--option", "threads=1", "--option", f"photos_dir={PHOTOS}",
            "--option", "stages=[16,32]", "--option", "stem=16"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(proc.stdout.strip().splitlines()[-1])
    assert card["format"] == "onnx-hybrid" and card["labels"] == LABELS
    assert card["extra"]["hparams"]["stages"] == [16, 32] and len(card["extra"]["members"][0]["history"]) == 2
    assert 0 <= card["metrics"]["accuracy"] <= 1 and "muxspace_macro_f1" in card["metrics"]
    assert card["training_data"]["held_out_images"] > 0
    assert (out / "hybrid.onnx").is_file() and (out / "hybrid.json").is_file()
    # a second run without --overwrite keeps the model
    again = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert again.returncode != 0 and "exists" in again.stderr

    # the mirror rule applied again from the card's held-out scores: a rule that flips the choice
    # rewrites the card with metrics computed anew by the exported model; one that keeps it changes nothing
    from meshfer.models.card import ModelCard
    from meshfer.training import TrainConfig
    from meshfer.training.hybrid import reselect_mirror

    before = card["extra"]["mirror_tta"]
    config = TrainConfig(train_dir=FER_TRAIN, val_dir=FER_VAL, cache_dir=tmp_path / "cache", workers=1,
                         limit_per_class=6, landmarker=LANDMARKER)
    kept = reselect_mirror(out / "hybrid.json", config, photos_dir=PHOTOS, min_gain=-1.0 if not before else 1.0)
    assert kept.extra["mirror_tta"] is (not before)
    saved = ModelCard.load(out / "hybrid.json")
    assert saved.extra["mirror_tta"] is (not before) and saved.extra["mirror_min_gain"] in (-1.0, 1.0)
    assert 0 <= saved.metrics["accuracy"] <= 1 and "muxspace_macro_f1" in saved.metrics
    assert saved.metrics["n_images"] == card["metrics"]["n_images"]
    text = (out / "hybrid.json").read_text()
    again = reselect_mirror(out / "hybrid.json", config, photos_dir=PHOTOS, min_gain=-1.0 if not before else 1.0)
    assert again.extra["mirror_tta"] is (not before) and (out / "hybrid.json").read_text() == text

    # distillation from that model (same split): the student's card names its teacher; a teacher
    # trained on another split is refused before any training
    from dataclasses import replace

    from meshfer.training.hybrid import train

    options = {"epochs": 1, "threads": 1, "stages": [16, 32], "stem": 16, "teacher": str(out / "hybrid.json")}
    student = train("hybrid", replace(config, output_dir=tmp_path / "student", options=options))
    assert student.extra["training"]["distill"] == 0.5
    assert student.training_data["teacher"]["fer2013"] == ["models/hybrid.json"]
    assert (tmp_path / "student" / "hybrid.onnx").is_file()
    with pytest.raises(ModelError, match="split seed"):
        train("hybrid", replace(config, seed=1, output_dir=tmp_path / "other", options=options))
    assert not (tmp_path / "other" / "hybrid.onnx").exists()


def test_mirror_averaging_must_gain_more_than_the_seed_spread() -> None:
    from meshfer.training.hybrid import MIRROR_MIN_GAIN, choose_mirror

    assert MIRROR_MIN_GAIN > 0
    assert not choose_mirror({"plain": 0.7734, "mirror_averaged": 0.7738})  # the shipped networks' tie
    assert choose_mirror({"plain": 0.70, "mirror_averaged": 0.70 + 2 * MIRROR_MIN_GAIN})
    assert choose_mirror({"plain": 0.80, "mirror_averaged": 0.70}, "true")
    assert not choose_mirror({"plain": 0.70, "mirror_averaged": 0.80}, "no")
    with pytest.raises(ValueError, match="mirror_tta=maybe"):
        choose_mirror({"plain": 0.7, "mirror_averaged": 0.7}, "maybe")


def test_unknown_hybrid_option_is_refused(tmp_path: Path) -> None:
    from meshfer.training import TrainConfig
    from meshfer.training.hybrid import train

    with pytest.raises(KeyError, match="no_such_option"):
        train("hybrid", TrainConfig(train_dir=FER_TRAIN, options={"no_such_option": 1}, landmarker=LANDMARKER))


def test_augmentation_keeps_shape_and_varies_the_crops(tables) -> None:
    from meshfer.hybrid import augment_crops

    crops = tables["fer"].crops[tables["fer"].found]
    a = augment_crops(crops, np.random.default_rng(0))
    b = augment_crops(crops, np.random.default_rng(0))
    c = augment_crops(crops, np.random.default_rng(1))
    assert a.shape == crops.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.mean(np.abs(a.astype(int) - crops.astype(int))) > 3


def test_shipped_hybrid_is_the_default_and_checks_out() -> None:
    from meshfer.models import default_card, get_card, load_model, verify_file

    card = get_card("hybrid", "expression")
    assert default_card("expression").name == "hybrid" and card.default
    verify_file(card)
    assert card.format == "onnx-hybrid" and card.labels == LABELS and card.crop["size"] == 48
    assert card.model_path.stat().st_size < 10_000_000
    for key in ("accuracy", "macro_f1", "unseen_accuracy", "unseen_macro_f1", "muxspace_macro_f1", "held_out_macro_f1"):
        assert 0.0 < card.metrics[key] < 1.0
    assert card.training_data["left_out_copies_of_validation_images"] > 0
    assert card.extra["export_max_difference"] < 1e-4
    assert all(m["history"] for m in card.extra["members"])
    model = load_model(card)
    assert model.needs_crops
    # the recipe's mirror rule, applied to the held-out scores the card recorded, is what the card says
    from meshfer.training.hybrid import choose_mirror

    assert model.needs_mirror is choose_mirror(card.extra["held_out_selection_scores"], card.extra["mirror_tta_choice"],
                                               card.extra["mirror_min_gain"])


def test_domain_ratios_hide_the_classes_a_domain_lacks() -> None:
    from meshfer.hybrid import adjust_to_domains, domain_ratios

    y = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1])
    domain = np.array(["fer"] * 6 + ["photos"] * 3)
    ratios = domain_ratios(y, domain, np.ones(len(y)), 3)
    assert ratios["fer"] == pytest.approx([1.0, 1.0, 1.0])
    # photos: 2/3 class 0, 1/3 class 1, no class 2 (fer prior: 1/3 each)
    assert ratios["photos"] == pytest.approx([2.0, 1.0, 0.0])
    proba = np.full((3, 3), 1 / 3)
    out = adjust_to_domains(proba, np.array(["fer", "photos", "other"]), ratios)
    assert out[0] == pytest.approx([1 / 3] * 3)
    assert out[1] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert out[2] == pytest.approx([1 / 3] * 3)  # a domain without ratios is left as it is
    assert np.allclose(out.sum(axis=1), 1.0)


def test_domain_prior_adjust_trains_and_records_its_ratios(tables) -> None:
    from meshfer.hybrid import HybridData, fit_hybrid, prepare_hybrid
    from meshfer.training.hybrid import HYBRID_FEATURE_SET

    fer = prepare_hybrid(tables["fer"], HYBRID_FEATURE_SET, LABELS, "fer2013")
    photos = prepare_hybrid(tables["photos"], HYBRID_FEATURE_SET, LABELS, "photos")
    keep = np.isin(photos.y, [LABELS.index("happy"), LABELS.index("neutral")])  # like muxspace-train
    data = HybridData.concat([fer, photos.subset(np.flatnonzero(keep))])
    result = fit_hybrid(data, data, TINY, {"epochs": 1, "batch_size": 8, "threads": 1, "domain_prior": "adjust"},
                        progress=False)
    assert set(result.ratios) == {"fer2013", "photos"}
    absent = [i for i, r in enumerate(result.ratios["photos"]) if r == 0]
    assert sorted(LABELS[i] for i in absent) == sorted(set(LABELS) - {"happy", "neutral"})
    assert np.isfinite(result.history[0]["loss"])
    with pytest.raises(ValueError, match="domain_prior"):
        fit_hybrid(data, data, TINY, {"epochs": 1, "domain_prior": "nope"}, progress=False)


def test_weight_average_is_scored_beside_each_epoch_and_kept_only_when_better(tables) -> None:
    from meshfer.hybrid import HybridData, fit_hybrid, predict_hybrid, prepare_hybrid, selection_score
    from meshfer.training.hybrid import HYBRID_FEATURE_SET

    fer = prepare_hybrid(tables["fer"], HYBRID_FEATURE_SET, LABELS, "fer2013")
    photos = prepare_hybrid(tables["photos"], HYBRID_FEATURE_SET, LABELS, "photos")
    data = HybridData.concat([fer, photos])
    opts = {"epochs": 4, "batch_size": 8, "threads": 1, "min_epochs": 0.5, "weight_average": 0.5}
    result = fit_hybrid(data, fer, TINY, opts, progress=False)
    # the average is scored from min_epochs on (the second of 4 epochs), not before
    assert [("held_out_score_averaged" in row) for row in result.history] == [False, True, True, True]
    best = max(max(r["held_out_score"], r.get("held_out_score_averaged", -1.0)) for r in result.history)
    row = result.history[result.best_epoch]
    kept = row["held_out_score_averaged"] if result.averaged else row["held_out_score"]
    assert kept == pytest.approx(best)
    # the model holds the kept weights: its held-out score is the recorded one
    pred = predict_hybrid(result.model, fer.crops, fer.x).argmax(axis=1)
    assert selection_score(fer, pred, len(LABELS)) == pytest.approx(kept, abs=1e-4)
    with pytest.raises(ValueError, match="weight_average"):
        fit_hybrid(data, fer, TINY, {**opts, "weight_average": 1.0}, progress=False)


def test_distill_trains_towards_the_teachers_probabilities(tables) -> None:
    from meshfer.hybrid import HybridData, fit_hybrid, predict_hybrid, prepare_hybrid
    from meshfer.training.hybrid import HYBRID_FEATURE_SET

    fer = prepare_hybrid(tables["fer"], HYBRID_FEATURE_SET, LABELS, "fer2013")
    photos = prepare_hybrid(tables["photos"], HYBRID_FEATURE_SET, LABELS, "photos")
    data = HybridData.concat([fer, photos])
    # a teacher that calls every face "happy" and every mirror image "sad": with distill=1 the labels
    # are ignored and the mirror images' targets are used for the mirrored half of each epoch
    happy, sad = LABELS.index("happy"), LABELS.index("sad")
    plain = np.eye(len(LABELS), dtype=np.float32)[np.full(len(data), happy)]
    mirror = np.eye(len(LABELS), dtype=np.float32)[np.full(len(data), sad)]
    opts = {"epochs": 12, "batch_size": 8, "threads": 1, "label_smoothing": 0.0, "distill": 1.0, "learning_rate": 1e-2}
    from dataclasses import replace

    # (the kept epoch is chosen on held-out faces: here labelled as the teacher says)
    result = fit_hybrid(data, replace(fer, y=np.full(len(fer), happy)), TINY, opts, progress=False, teacher=(plain, plain))
    pred = predict_hybrid(result.model, data.crops, data.x).argmax(axis=1)
    assert np.mean(pred == happy) > 0.9
    result = fit_hybrid(data, replace(fer, y=np.full(len(fer), sad)), TINY, opts, progress=False, teacher=(mirror, mirror))
    pred = predict_hybrid(result.model, data.crops, data.x).argmax(axis=1)
    assert np.mean(pred == sad) > 0.9
    with pytest.raises(ValueError, match="teacher"):
        fit_hybrid(data, fer, TINY, {**opts, "epochs": 1}, progress=False)
    with pytest.raises(ValueError, match="teacher probabilities"):
        fit_hybrid(data, fer, TINY, {**opts, "epochs": 1}, progress=False, teacher=(plain[:3], plain[:3]))


def test_teacher_probabilities_are_the_exported_models_on_both_views(trained) -> None:
    from meshfer.models.onnx import HybridOnnxModel
    from meshfer.training.hybrid import teacher_probabilities

    _, card, data, _, _ = trained
    plain, mirror = teacher_probabilities([card.path, card.path], data)
    model = HybridOnnxModel(card)
    assert np.allclose(plain, model.predict_proba(data.x, data.crops), atol=1e-6)
    assert np.allclose(mirror, model.predict_proba(data.x_mirror, data.crops[:, :, ::-1]), atol=1e-6)
    assert not np.allclose(plain, mirror)
    with pytest.raises(ModelError, match="split seed"):
        teacher_probabilities([card.path], data, seed=5)
