"""meshfer sort: label proposals from blendshape scores, copies that never move or overwrite, and
bad images (unreadable, faceless) reported in one line each while the run goes on."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import LANDMARKER, PHOTOS, REPO

from meshfer.landmarks import BLENDSHAPE_NAMES
from meshfer.sorting import (
    EYE_LABELS,
    UNSURE,
    EyeRules,
    MouthRules,
    eye_states,
    propose_eye_labels,
    propose_mouth_labels,
)

FACES = [PHOTOS / "face_happy" / "Adrien_Brody_0001.jpg", PHOTOS / "face_surprised" / "Diana_Ross_0001.jpg",
         PHOTOS / "face_sad" / "Celine_Dion_0003.jpg"]
FACELESS = PHOTOS / "face_sad" / "Dwarakish_2.jpg"  # MediaPipe finds no face in it


def _blendshapes(**scores: float) -> np.ndarray:
    bs = np.zeros((1, len(BLENDSHAPE_NAMES)), np.float32)
    for name, value in scores.items():
        bs[0, BLENDSHAPE_NAMES.index(name)] = value
    return bs


@pytest.mark.parametrize(
    "scores, expected",
    [
        ({"eyeBlinkLeft": 0.7, "eyeBlinkRight": 0.65}, "closed"),
        ({"eyeBlinkLeft": 0.05, "eyeBlinkRight": 0.1, "eyeSquintLeft": 0.2, "eyeSquintRight": 0.1}, "open"),
        ({"eyeWideLeft": 0.3, "eyeWideRight": 0.25}, "wide"),
        ({"eyeBlinkLeft": 0.35, "eyeBlinkRight": 0.3}, "narrowed"),
        ({"eyeBlinkLeft": 0.1, "eyeBlinkRight": 0.1, "eyeSquintLeft": 0.7, "eyeSquintRight": 0.65}, "narrowed"),
        ({"eyeBlinkLeft": 0.7, "eyeBlinkRight": 0.05}, UNSURE),  # a wink: the eyes differ
        ({"eyeBlinkLeft": 0.47, "eyeBlinkRight": 0.47}, UNSURE),  # between narrowed and closed
        ({"eyeWideLeft": 0.11, "eyeWideRight": 0.11}, UNSURE),  # between open and wide
    ],
)
def test_eye_rules(scores: dict[str, float], expected: str) -> None:
    assert propose_eye_labels(_blendshapes(**scores))[0] == expected


def test_eye_states_use_the_subjects_sides_and_nan_is_unsure() -> None:
    states = eye_states(_blendshapes(eyeBlinkLeft=0.9, eyeBlinkRight=0.05))
    assert states.tolist() == [["closed", "open"]]  # [subject's left, subject's right]
    assert eye_states(np.full((1, 52), np.nan)).tolist() == [[UNSURE, UNSURE]]
    assert EyeRules().closed_blink > EyeRules().narrowed_blink[1]  # an unsure band between narrowed and closed


def test_mouth_rules(landmarker) -> None:
    mesh = landmarker.detect(FACES[0])[0]
    lm = np.repeat(mesh.landmarks[None], 3, axis=0).copy()
    scale = np.linalg.norm(lm[0, 151, :2] - lm[0, 4, :2])  # square image: x and y share a unit
    for i, gap in enumerate((0.0, 0.3, 0.3)):
        lm[i, 14, :2] = lm[i, 13, :2] + [0.0, gap * scale]
    bs = np.concatenate([_blendshapes(), _blendshapes(jawOpen=0.5), _blendshapes()])  # third: a gap, no score
    sizes = np.array([mesh.image_size] * 3)
    assert propose_mouth_labels(lm, bs, sizes).tolist() == ["closed", "open", UNSURE]
    assert MouthRules().closed_gap < MouthRules().open_gap


def _meshfer(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MESHFER_LANDMARKER": str(LANDMARKER)}
    return subprocess.run([sys.executable, "-m", "meshfer", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_sort_copies_never_moves_and_reports_bad_images(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "more").mkdir(parents=True)
    for f in FACES[:2]:
        shutil.copy2(f, src / f.name)
    shutil.copy2(FACES[2], src / "more" / FACES[2].name)
    shutil.copy2(FACELESS, src / FACELESS.name)
    (src / "broken.jpg").write_bytes(b"this is not a JPEG")
    before = _snapshot(src)
    dest = tmp_path / "sorted"

    run = _meshfer("sort", "eyes", str(src), str(dest), "--workers", "1", "--cache-dir", str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    assert _snapshot(src) == before  # nothing moved, nothing changed
    problems = [line for line in run.stderr.splitlines() if line.startswith("meshfer: ")]
    assert any(FACELESS.name in line and "no face" in line for line in problems)
    assert any("broken.jpg" in line and "not sorted" in line for line in problems)
    assert sorted(p.name for p in dest.iterdir() if p.is_dir()) == sorted([f"eye_{x}" for x in EYE_LABELS] + [UNSURE])

    rows = {Path(r["source"]).name: r for r in _read_csv(dest / "sort-eyes.csv")}
    assert set(rows) == {f.name for f in FACES} | {FACELESS.name, "broken.jpg"}
    assert rows[FACELESS.name]["status"] == "no_face" and rows[FACELESS.name]["action"] == "skipped"
    assert rows["broken.jpg"]["status"] == "unreadable" and rows["broken.jpg"]["destination"] == ""
    copies = [p for p in dest.rglob("*.jpg")]
    assert sorted(p.name for p in copies) == sorted(f.name for f in FACES)
    for face in FACES:
        row = rows[face.name]
        assert row["action"] == "copied" and row["decision"] in (*EYE_LABELS, UNSURE)
        copy = Path(row["destination"])
        assert copy.parent.name == (UNSURE if row["decision"] == UNSURE else f"eye_{row['decision']}")
        assert copy.read_bytes() == face.read_bytes()
        assert 0.0 <= float(row["blink_left"]) <= 1.0


def test_sort_never_overwrites(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in FACES[:2]:
        shutil.copy2(f, src / f.name)
    dest = tmp_path / "sorted"
    assert _meshfer("sort", "mouth", str(src), str(dest), "--workers", "1", "--quiet").returncode == 0
    first_csv = (dest / "sort-mouth.csv").read_bytes()
    copy = next(dest.rglob(FACES[0].name))
    copy.write_bytes(b"a person's edit of this file")  # a different file of the same name now sits there
    before = _snapshot(dest)

    run = _meshfer("sort", "mouth", str(src), str(dest), "--workers", "1", "--quiet", "--json")
    assert run.returncode == 0, run.stderr
    after = _snapshot(dest)
    assert all(after[name] == value for name, value in before.items())  # every earlier file untouched
    new = set(after) - set(before)
    renamed = copy.with_name(f"{copy.stem}-2{copy.suffix}")
    assert new == {"sort-mouth-2.csv", str(renamed.relative_to(dest))}
    assert renamed.read_bytes() == FACES[0].read_bytes()
    assert (dest / "sort-mouth.csv").read_bytes() == first_csv
    actions = {Path(r["source"]).name: r["action"] for r in _read_csv(dest / "sort-mouth-2.csv")}
    assert actions == {FACES[0].name: "copied", FACES[1].name: "already present"}


def test_sort_refuses_a_destination_inside_the_source(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    shutil.copy2(FACES[0], tmp_path / "src" / FACES[0].name)
    run = _meshfer("sort", "eyes", str(tmp_path / "src"), str(tmp_path / "src" / "sorted"))
    assert run.returncode == 2
    assert "must not be inside the source" in run.stderr
    assert not (tmp_path / "src" / "sorted").exists()


def test_sort_seeds_the_mesh_cache_of_the_label_folders(tmp_path: Path) -> None:
    from meshfer.extract import ExtractStats, cache_file, extract
    from meshfer.datasets import scan_dataset
    from meshfer.landmarks import LandmarkerOptions
    from meshfer.sorting import sort_images

    src = tmp_path / "src"
    src.mkdir()
    for f in FACES:
        shutil.copy2(f, src / f.name)
    options = LandmarkerOptions(model_path=LANDMARKER)
    result = sort_images("mouth", src, tmp_path / "m", cache_dir=tmp_path / "cache", workers=1, options=options,
                         progress=False, on_problem=None)
    labelled = [r for r in result.records if r["decision"] in ("open", "closed")]
    if not labelled:
        pytest.skip("no clear mouth in the sample images")
    stats = ExtractStats()
    table = extract(scan_dataset(tmp_path / "m", "mouth_"), cache_file(tmp_path / "m", tmp_path / "cache"), workers=1,
                    options=options, prefix="mouth_", progress=False, stats=stats)
    assert stats.n_cached == stats.n_total == len(labelled)  # nothing extracted again
    assert table.found.all()
