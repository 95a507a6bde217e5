"""`meshfer predict` and `meshfer evaluate` as a user runs them (subprocesses), on real images
including a faceless one and an unreadable one, with the shipped expression models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FER_VAL, LABELS, LANDMARKER, PHOTOS, sample_images


def meshfer(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MESHFER_LANDMARKER": str(LANDMARKER)}
    return subprocess.run([sys.executable, "-m", "meshfer", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def _blank(path: Path) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((64, 64, 3), 128, np.uint8))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("images")
    photo = sorted((PHOTOS / "face_happy").iterdir())[0]
    fer = sample_images(FER_VAL, 1)["surprised"][0]
    out = {"photo": root / photo.name, "fer": root / fer.name, "blank": _blank(root / "blank.png"),
           "broken": root / "broken.jpg"}
    shutil.copy2(photo, out["photo"])
    shutil.copy2(fer, out["fer"])
    out["broken"].write_bytes(b"\xff\xd8 definitely not a jpeg")
    return out


def _check_face_line(line: dict, labels: list[str]) -> None:
    assert line["face"] is True
    expression = line["expression"]
    assert expression["label"] in labels
    assert list(expression["probabilities"]) == labels
    assert sum(expression["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert expression["label"] == max(expression["probabilities"], key=expression["probabilities"].get)


def test_predict_finds_the_smiles_in_real_photos() -> None:
    """The default model on the first 10 smiling faces of the real photos: most are 'happy' (chance: 1 in 7)."""
    photos = sorted((PHOTOS / "face_happy").iterdir())[:10]
    result = meshfer("predict", "--json", "--eyes", "none", "--gaze", "none", "--mouth", "none", *photos)
    assert result.returncode == 0, result.stderr
    labels = [json.loads(s)["expression"]["label"] for s in result.stdout.splitlines() if json.loads(s)["face"]]
    assert len(labels) >= 9 and labels.count("happy") >= 6, labels


def test_predict_json(images: dict[str, Path]) -> None:
    inputs = [images["photo"], images["fer"], images["blank"], images["broken"]]
    result = meshfer("predict", "--json", "--eyes", "none", "--gaze", "none", "--mouth", "none", *inputs)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(s) for s in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in inputs]
    _check_face_line(lines[0], LABELS)
    _check_face_line(lines[1], LABELS)
    assert lines[2] == {"image": str(images["blank"]), "face": False, "reason": "no face found"}
    assert lines[3]["face"] is False and lines[3]["reason"].startswith("unreadable image")
    assert set(lines[0]) == {"image", "face", "expression", "faces_found"} and lines[0]["faces_found"] == 1


@pytest.mark.parametrize("model", ["svm", "blendshapes", "logreg"])
def test_predict_with_each_named_model(images: dict[str, Path], model: str) -> None:
    result = meshfer("predict", "--json", "--model", model, "--eyes", "none", "--gaze", "none", "--mouth", "none",
                     images["photo"])
    assert result.returncode == 0, result.stderr
    _check_face_line(json.loads(result.stdout), LABELS)


def test_predict_folder_and_table_output(images: dict[str, Path]) -> None:
    folder = images["photo"].parent
    result = meshfer("predict", folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["image", "expression"]
    body = "\n".join(lines[1:])
    assert len(lines) == 1 + 4
    assert "(no face found)" in body and "unreadable image" in body
    assert any(line.split()[1] in LABELS for line in lines[1:] if "(" not in line)


def test_predict_unknown_model_lists_the_valid_ones(images: dict[str, Path]) -> None:
    result = meshfer("predict", "--model", "nonsense", images["photo"])
    assert result.returncode == 2
    assert "unknown expression model 'nonsense'; valid:" in result.stderr
    assert "svm" in result.stderr and "logreg" in result.stderr


def test_evaluate_json(small_dataset: Path) -> None:
    _blank(small_dataset / "face_happy" / "blank.png")
    result = meshfer("evaluate", small_dataset, "--json", "--no-progress", "--workers", "1")
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout)
    assert {"accuracy", "accuracy_on_faces", "coverage", "macro_f1", "per_class", "confusion", "labels",
            "n_images", "n_faces"} <= set(m)
    assert m["labels"] == LABELS
    assert m["n_images"] == 3 * len(LABELS) + 1
    assert m["n_faces"] < m["n_images"]  # the blank image at least
    assert m["coverage"] == pytest.approx(m["n_faces"] / m["n_images"])
    correct = sum(m["confusion"][i][i] for i in range(len(LABELS)))
    assert m["accuracy"] == pytest.approx(correct / m["n_images"])
    assert m["accuracy_on_faces"] == pytest.approx(correct / m["n_faces"])
    assert sum(sum(row) for row in m["confusion"]) == m["n_images"]
    assert m["confusion"][LABELS.index("happy")][-1] >= 1  # the blank image: a 'no face' miss
    assert set(m["per_class"]) == set(LABELS)
    assert m["per_class"]["happy"]["support"] == 4
    assert 0.0 <= m["macro_f1"] <= 1.0


def test_evaluate_can_leave_out_copies_of_training_images(small_dataset: Path, tmp_path: Path) -> None:
    train = tmp_path / "train" / "face_happy"
    train.mkdir(parents=True)
    happy = sorted((small_dataset / "face_happy").iterdir())
    shutil.copy2(happy[0], train / "a_copy.jpg")
    meshes = tmp_path / "meshes.npz"
    result = meshfer("evaluate", small_dataset, "--json", "--no-progress", "--workers", "1",
                     "--exclude-copies-of", train.parent, "--meshes", meshes)
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout)
    assert m["copies_excluded"] == 1
    from meshfer.meshtable import MeshTable

    assert len(MeshTable.load(meshes)) == 3 * len(LABELS)  # the cache keeps every image, copies included
    assert m["n_images"] == 3 * len(LABELS) - 1
    assert m["per_class"]["happy"]["support"] == 2
    missing = meshfer("evaluate", small_dataset, "--exclude-copies-of", tmp_path / "nowhere")
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr and "no such file or folder" in missing.stderr


def test_evaluate_text_and_photos_without_a_class(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for label in ("happy", "sad"):
        (root / f"face_{label}").mkdir(parents=True)
        for f in sorted((PHOTOS / f"face_{label}").iterdir())[:2]:
            shutil.copy2(f, root / f"face_{label}" / f.name)
    result = meshfer("evaluate", root, "--model", "logreg", "--no-progress", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"model logreg on {root}")
    assert "accuracy (every image)" in result.stdout and "macro-F1" in result.stdout
    assert "images 4," in result.stdout


def test_models_lists_expression_models() -> None:
    result = meshfer("models", "--task", "expression")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert {"svm", "blendshapes", "logreg"} <= set(rows)
    assert sum(" yes " in row for row in rows.values()) == 1
    assert all("muxspace_macro_f1" in row for row in rows.values() if row.split()[0] in ("svm", "blendshapes", "logreg"))
