"""The lean runtime: prediction (images and video) works without TensorFlow, scikit-learn and the
rest of the training stack, and `import meshfer` / `meshfer --help` load none of the heavy
libraries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import LANDMARKER, PHOTOS, REPO, sample_images

#: Packages the prediction path must not need: imports of them fail in the child processes below.
TRAINING_STACK = (
    "tensorflow",
    "tf_keras",
    "keras",
    "spektral",
    "sklearn",
    "skl2onnx",
    "onnx",  # the fused graph of the default models is built with it, and only run by onnxruntime
    "scipy",
    "pandas",
    "jupyter",
    "albumentations",
)

_PRELUDE = """
import json, sys
BLOCKED = {blocked!r}
for name in BLOCKED:
    sys.modules[name] = None  # any import of it raises ImportError
from meshfer.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in {watch!r})
    print("LOADED " + json.dumps(loaded), file=sys.stderr)
sys.exit(rc)
"""


def _run_blocked(
    args: list[str], blocked: tuple[str, ...], watch: tuple[str, ...] = ()
) -> tuple[subprocess.CompletedProcess, list[str]]:
    code = _PRELUDE.format(blocked=blocked, watch=tuple(watch) + blocked)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300, cwd=REPO)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("LOADED ")]
    loaded = json.loads(lines[-1][len("LOADED ") :]) if lines else None
    assert loaded is not None, proc.stderr
    return proc, loaded


@pytest.fixture(scope="module")
def onnx_expression_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small expression model (blendshapes -> label) exported to ONNX here, in the full environment."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from meshfer.landmarks import FaceLandmarker, LandmarkerOptions
    from meshfer.models.export import save_onnx_model

    xs, ys = [], []
    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER)) as lm:
        for label, paths in sample_images(PHOTOS, 3).items():
            for p in paths:
                faces = lm.detect(p)
                if faces:
                    xs.append(faces[0].blendshapes)
                    ys.append(label)
    x, y = np.stack(xs), np.array(ys)
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    out = tmp_path_factory.mktemp("lean-model")
    save_onnx_model(
        est,
        out,
        name="lean_expression",
        task="expression",
        feature_set="blendshapes",
        check_features=x[:4],
        labels=sorted(set(ys)),
    )
    return out / "lean_expression.json"


def _face_image() -> Path:
    return sorted((PHOTOS / "face_happy").iterdir())[0]


def test_predict_without_training_stack(onnx_expression_model: Path) -> None:
    image = _face_image()
    # An ONNX model given by its card, and the shipped defaults (whatever is installed).
    for model_args in (["--model", str(onnx_expression_model)], []):
        proc, loaded = _run_blocked(["predict", str(image), "--json", *model_args], TRAINING_STACK,
                                    ("matplotlib", "mediapipe.tasks.python.audio.audio_classifier"))
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["image"] == str(image) and result["face"] is True
        if model_args:
            probs = result["expression"]["probabilities"]
            assert set(probs) == set(json.loads(onnx_expression_model.read_text())["labels"])
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        else:
            from meshfer.models import default_card

            for key, task in (("expression", "expression"), ("eyes", "eye"), ("gaze", "gaze"), ("mouth", "mouth")):
                assert (key in result) == (default_card(task) is not None)
        # Nothing of the training stack, and not matplotlib (MediaPipe's drawing helpers stay unloaded),
        # nor MediaPipe's audio tasks (loaded lazily).
        assert loaded == [], loaded


def test_video_without_training_stack(onnx_expression_model: Path, tmp_path: Path) -> None:
    from meshfer.benchmark import synthetic_clip

    clip = tmp_path / "clip.mp4"
    synthetic_clip([_face_image()], clip, frames_per_face=6, blank_frames=2, fps=10.0)
    out_csv = tmp_path / "t.csv"
    proc, loaded = _run_blocked(
        ["video", str(clip), "--csv", str(out_csv), "--json", "--model", str(onnx_expression_model)],
        TRAINING_STACK,
        ("matplotlib",),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 8 and summary["faces"] >= 5
    assert sum(summary["expression_shares"].values()) == pytest.approx(1.0)
    assert len(out_csv.read_text().splitlines()) == 1 + 8
    assert loaded == [], loaded


def test_import_and_help_load_no_heavy_library() -> None:
    heavy = ("mediapipe", "onnxruntime", "tensorflow", "sklearn", "pandas", "matplotlib")
    code = (
        "import json, sys\n"
        "import meshfer\n"
        "meshfer.__version__\n"
        "from meshfer.cli import COMMANDS, build_parser, main\n"
        "parser = build_parser(); parser.format_help()\n"
        "for cmd in COMMANDS:\n"
        "    try:\n"
        "        main([cmd, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "video" in proc.stdout  # `meshfer video --help` was printed
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_runtime_requirements_are_lean_and_consistent() -> None:
    runtime = REPO / "requirements-runtime.txt"
    lines = [l.split("#", 1)[0].strip() for l in runtime.read_text().splitlines()]
    lines = [l for l in lines if l]
    pins = _pins(runtime)
    assert {"mediapipe", "numpy", "onnxruntime", "platformdirs", "tqdm"} <= set(pins)
    assert any(name.startswith("opencv") for name in pins)
    assert "." in lines or "-e ." in lines  # meshfer itself
    assert all(l in (".", "-e .") or "==" in l for l in lines), "every package is pinned"
    for name in (
        "tensorflow",
        "tf-keras",
        "spektral",
        "scikit-learn",
        "skl2onnx",
        "pandas",
        "jupyter",
        "albumentations",
    ):
        assert name not in pins
    full = _pins(REPO / "requirements.txt")
    for name, version in pins.items():
        if name in full:
            assert full[name] == version, f"{name}: {version} here, {full[name]} in requirements.txt"


def test_mediapipe_parts_meshfer_skips_still_load_on_use() -> None:
    """MediaPipe's audio, text, retrieval and decision tasks and drawing helpers are loaded lazily
    by meshfer's import; a program that uses them after meshfer still gets them."""
    code = (
        "import sys\n"
        "from meshfer.landmarks import import_mediapipe\n"
        "mp, vision = import_mediapipe()\n"
        "skipped = ['mediapipe.tasks.python.audio.audio_classifier', 'mediapipe.tasks.python.text.text_classifier']\n"
        "assert not any(m in sys.modules for m in skipped), [m for m in skipped if m in sys.modules]\n"
        "assert vision.FaceLandmarker.__name__ == 'FaceLandmarker'\n"
        "assert mp.tasks.audio.AudioClassifier.__name__ == 'AudioClassifier'\n"
        "assert mp.tasks.text.TextClassifier.__name__ == 'TextClassifier'\n"
        "from mediapipe.tasks.python.vision import drawing_utils\n"
        "assert callable(drawing_utils.draw_landmarks)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
