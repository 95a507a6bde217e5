"""Shared fixtures. Real data and the real MediaPipe model come from ../shared (or $MESHFER_SHARED);
nothing is downloaded: the landmarker is given by $MESHFER_LANDMARKER and the download URL points
at a closed local port."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MESHFER_SHARED", REPO.parent / "shared")).resolve()
LANDMARKER = Path(os.environ.get("MESHFER_LANDMARKER", SHARED / "models" / "face_landmarker.task"))
FER_TRAIN = SHARED / "datasets" / "fer2013" / "train"
FER_VAL = SHARED / "datasets" / "fer2013" / "validation"
PHOTOS = SHARED / "datasets" / "muxspace-dev"
PHOTOS_TRAIN = SHARED / "datasets" / "muxspace-train"  # photos to train on (the hybrid model)
LABELS = ["angry", "disgusted", "fear", "happy", "neutral", "sad", "surprised"]

# Set before any test imports meshfer: the model file, no user-cache writes, no downloads.
os.environ["MESHFER_LANDMARKER"] = str(LANDMARKER)
os.environ.setdefault("MESHFER_LANDMARKER_URL", "http://127.0.0.1:9/face_landmarker.task")


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [p for p in (LANDMARKER, FER_TRAIN, FER_VAL, PHOTOS) if not p.exists()]
    if missing:
        raise pytest.UsageError(
            "test data not found: " + ", ".join(map(str, missing)) + " (set MESHFER_SHARED to the shared folder)"
        )


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own empty user cache folder."""
    monkeypatch.setenv("MESHFER_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))


@pytest.fixture(scope="session")
def landmarker():
    """One IMAGE-mode FaceLandmarker for the whole session."""
    from meshfer.landmarks import FaceLandmarker, LandmarkerOptions

    with FaceLandmarker(LandmarkerOptions(model_path=LANDMARKER)) as lm:
        yield lm


def sample_images(root: Path, per_class: int, offset: int = 0) -> dict[str, list[Path]]:
    """The first ``per_class`` images (after ``offset``) of each face_<label> folder, sorted by name."""
    out = {}
    for folder in sorted(root.glob("face_*")):
        out[folder.name[5:]] = sorted(folder.iterdir())[offset : offset + per_class]
    return out


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A writable copy of 3 FER-2013 validation images per class, in face_<label> folders."""
    root = tmp_path / "data"
    for label, files in sample_images(FER_VAL, 3).items():
        (root / f"face_{label}").mkdir(parents=True)
        for f in files:
            shutil.copy2(f, root / f"face_{label}" / f.name)
    return root
