"""Feature sets as ONNX operators and the fused graph of the default models (one session per face)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LANDMARKER, PHOTOS, sample_images


@pytest.fixture(scope="module")
def faces():
    """Real faces: landmarks, blendshapes, image sizes and crops of 4 photos per class."""
    from meshfer.crops import CropSpec
    from meshfer.landmarks import FaceLandmarker, LandmarkerOptions
    from meshfer.models import default_card

    spec = CropSpec.from_dict(default_card("expression").crop)
    rows = []
    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER, crop=spec)) as landmarker:
        for files in sample_images(PHOTOS, 4).values():
            for path in files:
                found = landmarker.detect(path)
                if found:
                    mesh = found[0]
                    rows.append((mesh.landmarks, mesh.blendshapes, mesh.image_size, mesh.crop))
    assert len(rows) >= 20
    lm, bs, sizes, crops = (np.stack(c) for c in zip(*rows))
    return lm.astype(np.float32), bs.astype(np.float32), sizes.astype(np.float32), crops


def test_graph_features_equal_numpy_features_on_real_meshes(faces) -> None:
    import onnxruntime as ort

    from meshfer import features
    from meshfer.models.feature_graph import FEATURE_BUILDERS, feature_graph_bytes

    lm, bs, sizes, _ = faces
    names = list(FEATURE_BUILDERS)
    assert {"blendshapes_aligned_keypoints", "eye_state", "mouth_state", "gaze_eye_region"} <= set(names)
    session = ort.InferenceSession(feature_graph_bytes(names), providers=["CPUExecutionProvider"])
    got = session.run(names, {"landmarks": lm, "blendshapes": bs, "image_sizes": sizes})
    for name, value in zip(names, got):
        want = features.compute(name, lm, bs, sizes)
        assert value.shape == want.shape, name
        np.testing.assert_allclose(value, want, atol=1e-5, rtol=0, err_msg=name)
    # non-square images: the isotropic frame scales y by height / width
    tall = sizes * np.array([0.5, 1.0], np.float32)
    got = session.run(["eye_state"], {"landmarks": lm, "blendshapes": bs, "image_sizes": tall})[0]
    np.testing.assert_allclose(got, features.compute("eye_state", lm, bs, tall), atol=1e-5, rtol=0)


def test_the_fused_graph_gives_the_separate_models_outputs(faces) -> None:
    from meshfer.predict import Predictor

    lm, bs, sizes, crops = faces
    fused = Predictor()
    assert fused._fused is not None and set(fused._fused.tasks) == set(fused.models)
    separate = Predictor()
    separate._fused = None
    a = fused.predict_arrays(lm, bs, sizes, crops)
    b = separate.predict_arrays(lm, bs, sizes, crops)
    assert set(a) == set(b) == {"expression", "eye", "gaze", "mouth"}
    for task in a:
        assert a[task].shape == b[task].shape, task
        np.testing.assert_allclose(a[task], b[task], atol=1e-5, rtol=0, err_msg=task)
    # one face at a time (the video loop), and without image sizes
    one = fused.predict_arrays(lm[:1], bs[:1], None, crops[:1])
    ref = separate.predict_arrays(lm[:1], bs[:1], None, crops[:1])
    for task in one:
        np.testing.assert_allclose(one[task], ref[task], atol=1e-5, rtol=0, err_msg=task)


def test_the_fused_graph_is_used_only_for_the_default_models() -> None:
    from meshfer.predict import Predictor

    assert Predictor()._fused is not None
    assert Predictor(expression="ensemble")._fused is None  # another model chosen: the separate files
    assert Predictor(mouth=None)._fused is None  # a task off
    assert Predictor(expression="hybrid")._fused is None  # named, not "default": as asked


def test_the_shipped_fused_graph_is_rebuilt_from_the_shipped_cards_byte_for_byte(tmp_path: Path) -> None:
    from meshfer.models import default_card
    from meshfer.models.fused import build_default_fused, fused_dir

    manifest = build_default_fused(tmp_path)
    shipped = fused_dir()
    for name in ("defaults.onnx", "defaults.json"):
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), (
            f"{name} is stale: rebuild it with python -m meshfer.models.fused")
    members = json.loads(manifest.read_text())["members"]
    for task, member in members.items():
        assert member["sha256"] == default_card(task).sha256
    from meshfer.models.fused import fused_status

    assert "also run as one ONNX graph" in fused_status()


def test_a_changed_fused_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshfer.errors import ModelError
    from meshfer.models import default_card, fused

    folder = tmp_path / "fused"
    fused.build_default_fused(folder)
    monkeypatch.setattr(fused, "fused_dir", lambda: folder)
    cards = {t: default_card(t) for t in fused.FUSED_TASKS}
    assert fused.default_fused(cards) is not None
    data = bytearray((folder / "defaults.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "defaults.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="rebuild it"):
        fused.default_fused(cards)


def test_a_new_default_in_the_package_rebuilds_the_fused_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from meshfer.cli.train import _rebuild_fused
    from meshfer.models import default_card, registry
    from meshfer.models.fused import fused_dir

    shipped = fused_dir()
    models = tmp_path / "models"
    shutil.copytree(registry.models_dir(), models, ignore=shutil.ignore_patterns("fused"))
    monkeypatch.setattr(registry, "models_dir", lambda: models)
    registry._shipped.cache_clear()
    try:
        card = default_card("mouth")
        _rebuild_fused(card.__class__.load(models / "mouth.json"))
        assert "rebuilt the fused graph" in capsys.readouterr().err
        assert (models / "fused" / "defaults.onnx").read_bytes() == (shipped / "defaults.onnx").read_bytes()
        # a model written elsewhere, or not the default, leaves the package alone
        (models / "fused" / "defaults.onnx").unlink()
        _rebuild_fused(card.__class__.load(models / "logreg.json"))  # not a default
        assert not (models / "fused" / "defaults.onnx").exists()
    finally:
        registry._shipped.cache_clear()
