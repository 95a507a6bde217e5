"""meshfer video: a clip built here from real face photos (plus frames without a face) runs through
the CLI headless, in-process through the API, and is stopped with SIGINT part way."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import LANDMARKER, PHOTOS, REPO

FPS = 15.0
FRAMES_PER_FACE = 10
BLANK = 4
N_FACES = 3
N_FRAMES = N_FACES * (FRAMES_PER_FACE + BLANK)


def _face_frame_mask() -> np.ndarray:
    one = [True] * FRAMES_PER_FACE + [False] * BLANK
    return np.array(one * N_FACES)


def _run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "meshfer", "video", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from meshfer.benchmark import pick_face_photos

    chosen = pick_face_photos(PHOTOS, N_FACES, landmarker=LANDMARKER)
    assert len(chosen) == N_FACES
    return chosen


@pytest.fixture(scope="module")
def clip(photos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """640x480 at 15 fps: each photo for 10 frames (drifting), then 4 blank frames."""
    from meshfer.benchmark import synthetic_clip

    path = tmp_path_factory.mktemp("clip") / "faces.mp4"
    n = synthetic_clip(photos, path, frames_per_face=FRAMES_PER_FACE, blank_frames=BLANK, fps=FPS)
    assert n == N_FRAMES
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, photos: list[Path]) -> dict[str, Path]:
    """One small ONNX model per task, fitted here on meshes of real photos (so the video pipeline
    is tested with every task whatever models are shipped)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from meshfer import features
    from meshfer.datasets import scan_dataset
    from meshfer.landmarks import BLENDSHAPE_NAMES, FaceLandmarker, LandmarkerOptions
    from meshfer.models.export import save_onnx_model

    records = [r for r in scan_dataset(PHOTOS).limit(6, seed=0).records]
    lms, bss, sizes, labels = [], [], [], []
    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER)) as lm:
        for r in records:
            faces = lm.detect(r.path)
            if faces:
                lms.append(faces[0].landmarks)
                bss.append(faces[0].blendshapes)
                sizes.append(faces[0].image_size)
                labels.append(r.label)
    lm_, bs, sz = np.stack(lms), np.stack(bss), np.array(sizes, dtype=np.float32)
    b = {n: bs[:, i] for i, n in enumerate(BLENDSHAPE_NAMES)}
    out = tmp_path_factory.mktemp("models")
    cards = {}

    def fit(name, task, feature_set, y, **kw):
        x = features.compute(feature_set, lm_, bs, sz)
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500) if "labels" in kw else Ridge()).fit(x, y)
        save_onnx_model(est, out, name=name, task=task, feature_set=feature_set, check_features=x[:8], **kw)
        cards[task] = out / f"{name}.json"

    fit("tiny_expression", "expression", "blendshapes", np.array(labels), labels=sorted(set(labels)))
    blink = np.stack([b["eyeBlinkLeft"], b["eyeBlinkRight"]], axis=1).reshape(-1)
    eye_y = np.array(["closed", "narrowed", "open", "wide"])[3 - np.argsort(np.argsort(blink)) * 4 // len(blink)]
    fit("tiny_eye", "eye", "eye", eye_y, labels=["closed", "narrowed", "open", "wide"])
    mouth_y = np.where(b["jawOpen"] > np.median(b["jawOpen"]), "open", "closed")
    fit("tiny_mouth", "mouth", "mouth", mouth_y, labels=["closed", "open"])
    gx = (b["eyeLookOutLeft"] + b["eyeLookInRight"] - b["eyeLookInLeft"] - b["eyeLookOutRight"]) / 2
    gy = (b["eyeLookUpLeft"] + b["eyeLookUpRight"] - b["eyeLookDownLeft"] - b["eyeLookDownRight"]) / 2
    fit("tiny_gaze", "gaze", "blendshapes", np.stack([gx, gy], axis=1), targets=["x", "y"])
    return cards


def _model_args(cards: dict[str, Path]) -> list[str]:
    return [
        "--model",
        str(cards["expression"]),
        "--eyes",
        str(cards["eye"]),
        "--gaze",
        str(cards["gaze"]),
        "--mouth",
        str(cards["mouth"]),
    ]


def _check_face_column(rows: list[dict[str, str]]) -> None:
    face = np.array([r["face"] == "true" for r in rows])
    assert set(r["face"] for r in rows) <= {"true", "false"}
    expected = _face_frame_mask()
    assert not face[~expected].any(), "a blank frame was reported with a face"
    assert face[expected].mean() >= 0.8, f"faces found in only {face[expected].mean():.0%} of the face frames"


def test_video_cli_csv_plot_output_with_installed_models(clip: Path, tmp_path: Path) -> None:
    from meshfer.models import default_card

    out_csv, out_png, out_mp4 = tmp_path / "timeline.csv", tmp_path / "timeline.png", tmp_path / "annotated.mp4"
    proc = _run_cli(str(clip), "--csv", str(out_csv), "--plot", str(out_png), "--output", str(out_mp4), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])

    columns, rows = _read_csv(out_csv)
    assert len(rows) == N_FRAMES  # one row per frame
    assert columns[:3] == ["frame", "timestamp_s", "face"]
    assert [int(r["frame"]) for r in rows] == list(range(N_FRAMES))
    np.testing.assert_allclose([float(r["timestamp_s"]) for r in rows], np.arange(N_FRAMES) / FPS, atol=1e-3)
    _check_face_column(rows)
    # Columns follow the installed default models.
    assert ("expression" in columns) == (default_card("expression") is not None)
    assert ("eye_left" in columns) == (default_card("eye") is not None)
    assert ("gaze_x" in columns) == (default_card("gaze") is not None)
    assert ("mouth" in columns) == (default_card("mouth") is not None)

    assert summary["frames"] == N_FRAMES
    assert summary["faces"] == sum(r["face"] == "true" for r in rows)
    assert summary["interrupted"] is False
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_png.stat().st_size > 5000

    import cv2

    cap = cv2.VideoCapture(str(out_mp4))
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (480, 640, 3)
        n += 1
    cap.release()
    assert n == N_FRAMES


def test_video_cli_every_task(clip: Path, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    out_csv, out_png = tmp_path / "timeline.csv", tmp_path / "timeline.png"
    proc = _run_cli(
        str(clip),
        "--csv",
        str(out_csv),
        "--plot",
        str(out_png),
        "--smoothing",
        "0.5",
        "--attention-box",
        "0.5,0.5",
        *_model_args(tiny_models),
    )
    assert proc.returncode == 0, proc.stderr
    columns, rows = _read_csv(out_csv)
    assert len(rows) == N_FRAMES
    _check_face_column(rows)
    labels = json.loads(tiny_models["expression"].read_text())["labels"]
    assert columns == (
        ["frame", "timestamp_s", "face", "expression"]
        + [f"expression_{k}" for k in labels]
        + [
            "eye_left",
            "eye_right",
            "eye_left_closed",
            "eye_right_closed",
            "blinks",
            "gaze_x",
            "gaze_y",
            "mouth",
            "mouth_open",
        ]
    )
    for r in rows:
        if r["face"] == "false":
            assert r["expression"] == r["eye_left"] == r["gaze_x"] == r["mouth"] == ""
            continue
        probs = [float(r[f"expression_{k}"]) for k in labels]
        assert sum(probs) == pytest.approx(1.0, abs=1e-3)
        assert r["expression"] == labels[int(np.argmax(probs))]
        assert r["eye_left"] in {"closed", "narrowed", "open", "wide"} and r["eye_right"] in {
            "closed",
            "narrowed",
            "open",
            "wide",
        }
        assert 0.0 <= float(r["eye_left_closed"]) <= 1.0
        assert np.isfinite([float(r["gaze_x"]), float(r["gaze_y"])]).all()
        assert r["mouth"] in {"open", "closed"} and 0.0 <= float(r["mouth_open"]) <= 1.0
    text = proc.stdout
    for line in ("frames:", "faces found:", "expressions:", "blinks:", "PERCLOS:", "speaking time:", "attention:"):
        assert line in text
    assert "n/a" not in text.split("attention:")[1].splitlines()[0]
    assert out_png.stat().st_size > 5000


def test_video_cli_sigint_keeps_what_was_gathered(photos: list[Path], tmp_path: Path) -> None:
    from meshfer.benchmark import synthetic_clip

    long_clip = tmp_path / "long.mp4"
    total = synthetic_clip(photos[:1], long_clip, frames_per_face=450, fps=30.0)
    out_csv = tmp_path / "timeline.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshfer", "video", str(long_clip), "--csv", str(out_csv), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out_csv.exists() and len(out_csv.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the video ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr  # 128 + SIGINT, after the summary (as predict does)
    assert "Traceback" not in stderr
    assert "stopped after" in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["interrupted"] is True
    columns, rows = _read_csv(out_csv)
    assert 2 <= len(rows) < total
    assert len(rows) == summary["frames"]
    assert all(None not in r.values() and len(r) == len(columns) for r in rows)  # no cut-off line


def test_video_show_without_display(clip: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from meshfer.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert main(["video", str(clip), "--show"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("meshfer: error: --show needs a display")


def test_video_bad_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from meshfer.cli import main

    assert main(["video", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4: no such video file" in capsys.readouterr().err
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    assert main(["video", str(text)]) == 2
    assert "notes.mp4: cannot open as a video" in capsys.readouterr().err
    assert main(["video", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_video_api_in_process(clip: Path, photos: list[Path], tiny_models: dict[str, Path], tmp_path: Path) -> None:
    import cv2

    from meshfer.landmarks import LandmarkerOptions
    from meshfer.predict import Predictor
    from meshfer.temporal import TemporalConfig
    from meshfer.video import TimelineCsvWriter, VideoAnalyzer, analyze_video

    predictor = Predictor(
        expression=tiny_models["expression"],
        eyes=tiny_models["eye"],
        gaze=tiny_models["gaze"],
        mouth=tiny_models["mouth"],
    )
    options = LandmarkerOptions(model_path=LANDMARKER)
    timeline, summary = analyze_video(clip, predictor, options)
    assert len(timeline) == summary.frames == N_FRAMES
    assert not timeline.face[~_face_frame_mask()].any()
    assert summary.blinks is not None and summary.attention is not None and summary.speaking_s is not None

    # Frames given as arrays: a face, no face, the face again; timestamps that repeat are bumped.
    face = cv2.imread(str(photos[0]))
    frame = np.full((480, 640, 3), 90, np.uint8)
    h, w = face.shape[:2]
    frame[(480 - h) // 2 : (480 - h) // 2 + h, (640 - w) // 2 : (640 - w) // 2 + w] = face
    blank = np.full_like(frame, 90)
    with VideoAnalyzer(predictor, options, TemporalConfig(smoothing=1.0)) as analyzer:
        sequence = [frame] * 4 + [blank] * 3 + [frame] * 3
        results = [analyzer.process(f.copy(), i / 30.0) for i, f in enumerate(sequence)]
        analyzer.process(frame, 9 / 30.0)  # same timestamp as the last frame: still accepted
    flags = [r.record.face for r in results]
    assert flags[4:7] == [False] * 3 and all(flags[:4]) and all(flags[7:])
    assert all(r.mesh is not None and r.prediction is not None for r in results if r.record.face)
    # the crop's seconds are reported apart (they are inside the landmarker's)
    assert all(0 <= r.crop_s < r.landmarker_s for r in results)
    assert all((r.crop_s > 0) == (r.record.face and predictor.crop_spec is not None) for r in results)
    # With smoothing off, each record says what the frame's own prediction says.
    for r in results:
        if not r.record.face:
            assert r.prediction is None and r.outputs is None
            continue
        p = r.prediction
        assert r.record.expression == p.expression.label
        assert r.record.expression_probabilities == pytest.approx(p.expression.probabilities)
        assert r.record.eyes == {side: c.label for side, c in p.eyes.items()}
        assert r.record.eye_closed == pytest.approx({side: c.probabilities["closed"] for side, c in p.eyes.items()})
        assert r.record.gaze == pytest.approx((p.gaze["x"], p.gaze["y"]))
        assert (r.record.mouth, r.record.mouth_open) == (p.mouth.label, pytest.approx(p.mouth.probabilities["open"]))
        assert p == predictor.predict_mesh(r.mesh)
    with TimelineCsvWriter(tmp_path / "t.csv", analyzer.expression_labels, analyzer.tasks) as writer:
        for record in analyzer.timeline:
            writer.write(record)
    assert len(_read_csv(tmp_path / "t.csv")[1]) == len(sequence) + 1


def test_benchmark_script_runs(small_dataset: Path, tmp_path: Path) -> None:
    """`python -m meshfer.benchmark` on a few images: every section runs and prints its table."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshfer.benchmark",
            "--data",
            str(small_dataset),
            "--photos",
            str(PHOTOS),
            "--images",
            "6",
            "--workers",
            "2",
            "--runs",
            "1",
            "--frames",
            "20",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    for title in (
        "Per-image time",
        "Extraction throughput",
        "cold process",
        "Import and load times",
        "Video on one core",
    ):
        assert title in proc.stdout
    results = json.loads(out.read_text())
    assert [row[0] for row in results["extract"]["rows"]] == [1, 2]
    assert results["startup"]["output"]["face"] is True and results["startup"]["peak_rss_mb"][0] > 0
    video = results["video"]
    assert video["size"] == [640, 480] and video["cpus"] and len(video["cpus"]) == 1
    assert video["end_to_end"]["frames"] == 20 and video["end_to_end"]["faces"] >= 15
    assert video["landmarker_only"]["fps"] > 0 and video["landmarker_decoding"]["frames"] == 20
    # the one-graph issue's measures: the crop counted with the models, not inside the landmarker
    e2e = video["end_to_end"]
    assert 0 < e2e["models_over_landmarker"] < e2e["cost_over_landmarker"]
    assert "crop + features + models + temporal =" in proc.stdout and "x the landmarker only" in proc.stdout
    assert results["stages"][0]["cost_over_inference"] > 0 and "% of MediaPipe's inference" in proc.stdout
