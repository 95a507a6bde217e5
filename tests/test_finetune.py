"""Photos of people never seen: identity folds, the shipped hybrid's networks back in Keras, fine-tuning
per fold (out of fold, resumable) and the PCA width clamp of the scikit-learn recipes.

Real photos of muxspace-dev and muxspace-train, real FER-2013 faces and real MediaPipe meshes; the
fine-tuning runs are one epoch on a few dozen faces.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FER_VAL, LABELS, PHOTOS, PHOTOS_TRAIN, sample_images

from meshfer.folds import identity_groups, identity_of, make_folds


def test_identity_is_the_file_name_without_its_trailing_number() -> None:
    assert identity_of("face_sad/Dwarakish_105.jpg") == "Dwarakish"
    assert identity_of("Alexander_Lukashenko_0001.jpg") == "Alexander_Lukashenko"
    assert identity_of("face_happy/KatrinaKaif_1.png") == "KatrinaKaif"
    assert identity_of("noidentity.jpg") == "noidentity"


def test_folds_put_no_identity_on_both_sides_and_are_the_same_on_every_run() -> None:
    folds = make_folds(PHOTOS, 5, seed=0)
    assert len(folds.names) == sum(1 for p in PHOTOS.glob("face_*/*") if p.is_file())
    for identity in set(folds.identities):
        assert len({int(f) for f, i in zip(folds.fold, folds.identities) if i == identity}) == 1, identity
    for k in range(5):
        train, test = set(folds.train_rows(k)), set(folds.test_rows(k))
        assert train and test and not train & test
        assert {folds.identities[i] for i in train}.isdisjoint({folds.identities[i] for i in test})
        # stratified: every class of the folder is scored in every fold
        assert {folds.labels[i] for i in test} == set(folds.labels)
    again = make_folds(PHOTOS, 5, seed=0)
    assert again.names == folds.names and np.array_equal(again.fold, folds.fold)
    # what a card records gives the same folds back
    from meshfer.folds import PhotoFolds

    back = PhotoFolds.from_dict(folds.to_dict())
    assert np.array_equal(back.fold[back.rows_of(folds.names)], folds.fold)


def test_copies_and_near_copies_under_other_names_share_a_group(tmp_path: Path) -> None:
    import cv2

    by_identity = {identity_of(p): p for p in sorted((PHOTOS / "face_happy").iterdir())}
    sources = [by_identity[name] for name in sorted(by_identity)[:3]]
    for p in sources:
        shutil.copy2(p, tmp_path / p.name)
    shutil.copy2(sources[0], tmp_path / "Someone_Else_0001.jpg")  # byte-identical copy, another name
    image = cv2.imread(str(sources[1]))
    small = cv2.resize(image, None, fx=0.8, fy=0.8)  # a near-copy: smaller, brighter, re-encoded
    cv2.imwrite(str(tmp_path / "Another_Person_0003.jpg"), cv2.convertScaleAbs(small, alpha=1.05, beta=8),
                [cv2.IMWRITE_JPEG_QUALITY, 70])
    paths = [tmp_path / p.name for p in sources] + [tmp_path / "Someone_Else_0001.jpg", tmp_path / "Another_Person_0003.jpg"]
    groups = identity_groups(paths)
    assert groups[3] == groups[0]
    assert groups[4] == groups[1]
    assert len({groups[0], groups[1], groups[2]}) == 3  # different photos of different people stay apart


@pytest.fixture(scope="module")
def tables():
    """Meshes with crops: FER-2013 validation (3 per class), training photos (2 per class) and a
    small copy of muxspace-dev (3 photos per class) in its own folder, for three folds."""
    import tempfile

    from meshfer.datasets import scan_paths
    from meshfer.extract import extract

    def table(root: Path, n: int, labelled_root: Path | None = None):
        from dataclasses import replace

        paths = [p for files in sample_images(root, n).values() for p in files]
        t = extract(scan_paths(paths), workers=1, progress=False)
        labels = np.array([p.parent.name[5:] for p in map(Path, t.paths)])
        return replace(t, labels=labels, meta={**t.meta, "labels": LABELS})

    dev_root = Path(tempfile.mkdtemp(prefix="meshfer-dev-"))
    for label, files in sample_images(PHOTOS, 3).items():
        (dev_root / f"face_{label}").mkdir()
        for f in files:
            shutil.copy2(f, dev_root / f"face_{label}" / f.name)
    from meshfer.extract import extract_folder

    dev = extract_folder(dev_root, workers=1, progress=False)
    yield {"fer": table(FER_VAL, 3), "photos": table(PHOTOS_TRAIN, 2), "dev": dev, "dev_root": dev_root}
    shutil.rmtree(dev_root, ignore_errors=True)


@pytest.fixture(scope="module")
def shipped():
    from meshfer.models.registry import get_card

    return get_card("hybrid")


@pytest.fixture(scope="module")
def data(tables, shipped):
    from meshfer.training.finetune import finetune_data

    t = tables
    return finetune_data(t["fer"], t["fer"], t["photos"], t["dev"], t["dev_root"], shipped.feature_set, shipped.labels,
                         n_folds=2, seed=0, fer2013_subsample=14)


def test_keras_members_rebuilt_from_onnx_give_the_onnx_probabilities(data, shipped) -> None:
    from meshfer.hybrid import predict_hybrid, predict_members
    from meshfer.models.onnx_keras import keras_members
    from meshfer.models.registry import load_model

    faces = [data.dev, data.fer, data.photos]
    crops = np.concatenate([f.crops for f in faces])
    x = np.concatenate([f.x for f in faces])
    members = keras_members(shipped)
    assert len(members) == 2
    onnx = load_model("hybrid").predict_proba(x, crops)
    assert np.max(np.abs(predict_members(members, crops, x) - onnx)) < 1e-5
    # the members differ (two networks, not one read twice)
    assert np.max(np.abs(predict_hybrid(members[0], crops, x) - predict_hybrid(members[1], crops, x))) > 1e-3


def test_a_finetuned_member_exports_back_to_onnx_and_matches_keras(data, shipped) -> None:
    import onnxruntime as ort

    from meshfer.crops import standardize
    from meshfer.hybrid import import_keras, predict_hybrid
    from meshfer.models.keras_onnx import keras_to_onnx_bytes
    from meshfer.models.onnx_keras import keras_members
    from meshfer.training.finetune import finetune_member, fold_training_data

    train = fold_training_data(data, 0, {})
    out = finetune_member(shipped, 0, train, {"epochs": 1, "batch_size": 16}, seed=3, score=[(data.dev.crops, data.dev.x)])
    import_keras()
    model = keras_members(shipped, only=0)[0]
    before = predict_hybrid(model, data.dev.crops, data.dev.x)
    model.set_weights(out["weights"])
    after = predict_hybrid(model, data.dev.crops, data.dev.x)
    assert np.max(np.abs(after - before)) > 1e-4  # it did learn something
    assert np.max(np.abs(after - out["probabilities"][0])) < 1e-5
    session = ort.InferenceSession(keras_to_onnx_bytes(model), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"crop": standardize(data.dev.crops), "mesh": data.dev.x.astype(np.float32)})[0]
    assert np.max(np.abs(got - after)) < 1e-5


def test_batch_norm_recalibration_keeps_the_function_and_matches_batch_statistics(data, shipped) -> None:
    from meshfer.hybrid import _inputs, import_keras, predict_hybrid
    from meshfer.models.onnx_keras import keras_members
    from meshfer.training.finetune import fold_training_data, recalibrate_batch_norm

    _, keras = import_keras()
    model, exported = keras_members(shipped, only=0)[0], keras_members(shipped, only=0)[0]
    train = fold_training_data(data, None, {})
    before = predict_hybrid(model, train.crops, train.x)
    recalibrate_batch_norm(model, train, keras)
    assert np.max(np.abs(predict_hybrid(model, train.crops, train.x) - before)) < 1e-4
    # in training mode (batch statistics) the network now stays near its inference output; with the
    # exported statistics (mean 0, variance 1 - eps) it would not
    after = model(_inputs(model, train.crops, train.x), training=True).numpy()
    as_exported = exported(_inputs(exported, train.crops, train.x), training=True).numpy()
    assert np.mean(np.abs(after - before)) < np.mean(np.abs(as_exported - before))


def test_out_of_fold_photos_are_scored_by_a_model_that_never_saw_them_and_a_killed_run_resumes(
        data, shipped, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshfer.training import finetune

    options = {"epochs": 1, "batch_size": 16}
    whole = finetune.cross_validate(shipped, data, options, cache_dir=tmp_path / "a", progress=False, log=None, processes=1)
    assert not np.isnan(whole.proba[data.dev.found]).any()
    assert np.isnan(whole.proba[~data.dev.found]).all()
    for result in whole.folds:
        scored = {data.dev_names[i] for i in result.rows}
        assert scored and result.trained_on and scored.isdisjoint(result.trained_on)
        assert {identity_of(n) for n in scored}.isdisjoint({identity_of(n) for n in result.trained_on})
    assert sorted(i for r in whole.folds for i in r.rows) == list(range(len(data.dev_names)))
    m = whole.metrics()
    assert m["n_images"] == len(data.dev_names) and 0.0 <= m["fer2013_held_out_accuracy"] <= 1.0

    # killed during the second fold: the first is kept, the run goes on from there and ends the same
    real, calls = finetune.finetune_members, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "finetune_members", dying)
    with pytest.raises(KeyboardInterrupt):
        finetune.cross_validate(shipped, data, options, cache_dir=tmp_path / "b", progress=False, log=None, processes=1)
    monkeypatch.setattr(finetune, "finetune_members", real)
    resumed = finetune.cross_validate(shipped, data, options, cache_dir=tmp_path / "b", progress=False, log=None,
                                      processes=1)
    assert [r.resumed for r in resumed.folds] == [True, False]
    np.testing.assert_allclose(resumed.proba, whole.proba, atol=1e-6)
    assert resumed.key == whole.key


def test_unknown_finetune_option_is_refused(data, shipped, tmp_path: Path) -> None:
    from meshfer.training.finetune import cross_validate

    with pytest.raises(KeyError, match="valid: epochs"):
        cross_validate(shipped, data, {"epoch": 3}, cache_dir=tmp_path, progress=False, log=None)


def test_a_bad_mirror_choice_is_refused_before_any_work(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from meshfer.training.hybrid_finetune import train

    config = SimpleNamespace(options={"finetune_from": "hybrid-base", "photos_train_dir": str(tmp_path),
                                      "finetune_photos_dir": str(tmp_path), "mirror_tta": "sometimes"},
                             val_dir=tmp_path, train_dir=tmp_path)
    with pytest.raises(ValueError, match="mirror_tta=sometimes"):
        train("hybrid", config)


def test_pca_width_is_clamped_to_what_ten_images_per_class_allow(capsys: pytest.CaptureFixture[str]) -> None:
    from meshfer import features
    from meshfer.classifiers import build_pipeline, fit_pipeline
    from meshfer.datasets import scan_paths
    from meshfer.extract import extract

    files = sample_images(FER_VAL, 10)
    table = extract(scan_paths([p for fs in files.values() for p in fs]), workers=1, progress=False, crops=False)
    found = np.asarray(table.found, bool)
    x = features.compute("nose_relative", table.landmarks[found], table.blendshapes[found], table.image_sizes[found])
    y = np.array([LABELS.index(Path(p).parent.name[5:]) for p in table.paths])[found]
    assert len(x) < 100  # fewer faces than the PCA width asked for
    pipe = fit_pipeline(build_pipeline("svm", n_components=100), x, y)
    width = min(x.shape)
    assert pipe.named_steps["pca"].n_components_ == width
    assert f"PCA width 100 lowered to {width}" in capsys.readouterr().out
    assert pipe.predict_proba(x).shape == (len(x), len(np.unique(y)))


_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor

def work(_):
    from meshfer.hybrid import worker_setup
    worker_setup()
    print(os.getpid(), flush=True)
    time.sleep(120)

if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(work, 0).result()
"""


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_training_workers_end_with_their_parent(tmp_path: Path) -> None:
    """A killed `scripts/finetune_folds.py` (or `meshfer train hybrid`) leaves no training process behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a zombie counts as gone: it is not running
        if Path(f"/proc/{child}/stat").exists() and Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker outlived its killed parent")


@pytest.mark.slow
def test_meshfer_train_hybrid_fine_tunes_the_base_network_and_reports_photos_out_of_fold(tmp_path: Path) -> None:
    """The command that makes the shipped hybrid from hybrid-base, on 6 images per class and one
    epoch: the card names its base by SHA-256, records the folds and the recipe, and its photo
    figures are the out-of-fold ones."""
    import json
    import subprocess
    import sys

    from conftest import FER_TRAIN, REPO

    from meshfer.models.registry import get_card, load_model

    out = tmp_path / "models"
    args = [sys.executable, "-m", "meshfer", "train", "hybrid", str(FER_TRAIN), "--val", str(FER_VAL), "-o", str(out),
            "--limit-per-class", "6", "--cache-dir", str(tmp_path / "meshes"), "--workers", "1", "--json",
            "--option", "finetune_from=hybrid-base", "--option", f"photos_train_dir={PHOTOS_TRAIN}",
            "--option", f"finetune_photos_dir={PHOTOS}", "--option", "epochs=1", "--option", "fer2013_subsample=20",
            "--option", "out_of_fold=run", "--option", "n_folds=2", "--option", "processes=1",
            "--option", f"finetune_cache={tmp_path / 'ft'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads(proc.stdout.strip().splitlines()[-1])
    base = get_card("hybrid-base")
    assert card["extra"]["base"] == {"name": "hybrid-base", "file": base.file, "sha256": base.sha256}
    assert card["extra"]["finetune"]["recipe"]["epochs"] == 1 and card["extra"]["folds"]["n_folds"] == 2
    oof = card["extra"]["out_of_fold"]
    assert oof["n_images"] == card["metrics"]["muxspace_n_images"] == 36  # 6 photos of each of the 6 classes
    assert card["metrics"]["muxspace_macro_f1"] == oof["macro_f1"]
    assert 0 < card["metrics"]["accuracy"] <= 1 and card["metrics"]["n_images"] == 42
    assert card["extra"]["export_max_difference"] < 1e-4
    # mirror averaging stays off unless asked: the network costs what the base costs
    assert card["extra"]["mirror_tta"] is False and card["extra"]["mirror_tta_choice"] == "false"
    model = load_model(out / "hybrid.json")
    assert model.needs_crops and model.card.sha256 != base.sha256
    # the final members were cached: a second run (overwriting) trains nothing again and gives the same file
    first = (out / "hybrid.onnx").read_bytes()
    proc = subprocess.run(args + ["--overwrite"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(from the cache)" in proc.stderr and (out / "hybrid.onnx").read_bytes() == first


def test_the_rule_picks_the_best_photo_recipe_that_keeps_fer2013() -> None:
    from meshfer.training.finetune import choose_recipe

    results = {"base": {"macro_f1": 0.50, "accuracy": 0.56, "fer2013_held_out_accuracy": 0.645},
               "a": {"macro_f1": 0.55, "accuracy": 0.61, "fer2013_held_out_accuracy": 0.639},
               "b": {"macro_f1": 0.60, "accuracy": 0.65, "fer2013_held_out_accuracy": 0.630},  # loses FER-2013
               "c": {"macro_f1": 0.54, "accuracy": 0.62, "fer2013_held_out_accuracy": 0.645}}
    assert choose_recipe(results, "base") == "a"
    assert choose_recipe(results, "base", tolerance=0.02) == "b"
    assert choose_recipe({"base": results["base"], "b": results["b"]}, "base") is None
