"""Finding the landmarker model: argument, environment, user cache, download (from a local server
only), and clear errors for missing, corrupt or unreachable files."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import LANDMARKER
from meshfer import assets
from meshfer.errors import LandmarkerModelError


@pytest.fixture
def server(tmp_path: Path):
    """An HTTP server on 127.0.0.1 serving files from a temporary folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHFER_LANDMARKER", str(tmp_path / "missing.task"))
    assert assets.resolve_landmarker(LANDMARKER) == LANDMARKER.resolve()


def test_environment_variable_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHFER_LANDMARKER", str(LANDMARKER))
    assert assets.resolve_landmarker() == LANDMARKER.resolve()
    monkeypatch.delenv("MESHFER_LANDMARKER")
    cache = tmp_path / "cache"
    monkeypatch.setenv("MESHFER_CACHE_DIR", str(cache))
    cache.mkdir()
    shutil.copy(LANDMARKER, cache / "face_landmarker.task")
    assert assets.resolve_landmarker(download=False) == (cache / "face_landmarker.task").resolve()


def test_download_from_local_server(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = server
    shutil.copy(LANDMARKER, root / "face_landmarker.task")
    cache = tmp_path / "cache"
    monkeypatch.delenv("MESHFER_LANDMARKER")
    monkeypatch.setenv("MESHFER_CACHE_DIR", str(cache))
    monkeypatch.setenv("MESHFER_LANDMARKER_URL", f"{url}/face_landmarker.task")
    path = assets.resolve_landmarker(progress=False)
    assert path == (cache / "face_landmarker.task").resolve()
    assert assets.sha256_of(path) == assets.LANDMARKER_SHA256
    assert sorted(p.name for p in cache.iterdir()) == ["face_landmarker.task"]  # no partial files left


def test_download_with_wrong_hash_saves_nothing(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, url = server
    (root / "face_landmarker.task").write_bytes(b"not the model")
    cache = tmp_path / "cache"
    monkeypatch.delenv("MESHFER_LANDMARKER")
    monkeypatch.setenv("MESHFER_CACHE_DIR", str(cache))
    monkeypatch.setenv("MESHFER_LANDMARKER_URL", f"{url}/face_landmarker.task")
    with pytest.raises(LandmarkerModelError, match="SHA-256"):
        assets.resolve_landmarker(progress=False)
    assert not any(cache.iterdir())


def test_no_model_and_no_network_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.delenv("MESHFER_LANDMARKER")
    monkeypatch.setenv("MESHFER_CACHE_DIR", str(cache))
    monkeypatch.setenv("MESHFER_LANDMARKER_URL", "http://127.0.0.1:9/face_landmarker.task")  # closed port
    with pytest.raises(LandmarkerModelError) as err:
        assets.resolve_landmarker(progress=False)
    message = str(err.value)
    assert str(cache / "face_landmarker.task") in message and "--landmarker" in message
    assert "\n" not in message


def test_corrupt_model_files_are_named(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.task"
    truncated.write_bytes(LANDMARKER.read_bytes()[: 1_000_000])
    text = tmp_path / "text.task"
    text.write_text("hello")
    other = tmp_path / "other.task"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("something.tflite", b"x")
    for path in (truncated, text, other):
        with pytest.raises(LandmarkerModelError) as err:
            assets.check_landmarker_file(path)
        assert str(path) in str(err.value)
    with pytest.raises(LandmarkerModelError, match="not found"):
        assets.check_landmarker_file(tmp_path / "absent.task")


def test_corrupt_model_never_reaches_mediapipe(tmp_path: Path) -> None:
    from meshfer.landmarks import FaceLandmarker, LandmarkerOptions

    bad = tmp_path / "bad.task"
    bad.write_bytes(LANDMARKER.read_bytes()[:-5000])
    with pytest.raises(LandmarkerModelError, match="bad.task"):
        FaceLandmarker(LandmarkerOptions(model_path=bad))


def test_valid_bundle_with_broken_member_is_reported_by_mediapipe_wrapper(tmp_path: Path) -> None:
    """A zip with the right member names but garbage models: MediaPipe refuses it, and the
    wrapper turns that into a one-line LandmarkerModelError naming the file."""
    from meshfer.landmarks import FaceLandmarker, LandmarkerOptions

    fake = tmp_path / "fake.task"
    with zipfile.ZipFile(fake, "w") as z:
        z.writestr("face_detector.tflite", b"garbage")
        z.writestr("face_landmarks_detector.tflite", b"garbage")
    with pytest.raises(LandmarkerModelError) as err:
        FaceLandmarker(LandmarkerOptions(model_path=fake))
    assert "fake.task" in str(err.value) and "\n" not in str(err.value)
