"""The browser page in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no
browser download), served by ``meshfer web``'s server: the page's results on real photos against
``meshfer predict --json``, a fake webcam stream from a video file, and the server's bounds.
Skipped, with the reason, where Chromium, Playwright or the page's npm packages are missing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import LANDMARKER, PHOTOS, REPO, sample_images

CHROMIUM = os.environ.get("MESHFER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("MESHFER_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))


def _page_missing() -> str | None:
    from meshfer.errors import MeshferError
    from meshfer.web import web_root

    try:
        web_root()
    except MeshferError as exc:
        return str(exc)
    return None


def _browser_missing() -> str | None:
    if CHROMIUM is None:
        return "Chromium is not installed (apt-get install chromium; or set MESHFER_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install playwright)"
    return _page_missing()


needs_page = pytest.mark.skipif(_page_missing() is not None, reason=str(_page_missing()))
needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))


@needs_page
def test_meshfer_web_command(tmp_path: Path) -> None:
    """`meshfer web --port 0` prints the URL it serves on 127.0.0.1; Ctrl-C stops it; without the page's
    folder it says so in one line."""
    import signal

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "meshfer", "web", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("meshfer web: serving the page at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].split()[0]
        assert b"<title>meshfer in the browser</title>" in urllib.request.urlopen(url).read()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().endswith("meshfer: interrupted")
    missing = tmp_path / "nowhere"
    bad = subprocess.run([sys.executable, "-m", "meshfer", "web", "--root", str(missing)], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and str(missing) in bad.stderr


@pytest.fixture(scope="module")
def server():
    from meshfer.web import PageServer

    with PageServer(0, landmarker=LANDMARKER) as s:
        yield s


def _browser(pw, *args: str):
    return pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", *args])


def _open(browser, url: str):
    """The page, loaded; the list its script errors and any request to another host (refused: the page
    works offline) are added to."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def outside(route) -> None:
        errors.append(f"request outside the server: {route.request.url}")
        route.abort()

    base = url.split("?", 1)[0]
    page.route(lambda u: not u.startswith(base), outside)
    page.goto(url)
    page.evaluate("window.meshfer.ready")
    return page, errors


@needs_page
def test_server_binds_loopback_and_serves_only_the_page(server) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    config = json.loads(urllib.request.urlopen(server.url + "config.json").read())
    assert config["tasks"]["expression"]["labels"][0] == "angry" and config["temporal"]["smoothing"] == 0.3
    body = urllib.request.urlopen(server.url + "models/face_landmarker.task").read()
    assert len(body) == LANDMARKER.stat().st_size
    head = urllib.request.urlopen(server.url + "vendor/ort/ort-wasm-simd-threaded.wasm")
    assert head.headers["Content-Type"] == "application/wasm"
    graph = urllib.request.urlopen(server.url + config["graph"]["url"]).read()
    assert hashlib.sha256(graph).hexdigest() == config["graph"]["sha256"]
    for path in ("../pyproject.toml", "%2e%2e/pyproject.toml", "vendor/ort/../../package.json", "node_modules/onnxruntime-web/package.json",
                 "package.json", "models/../web.py", "vendor/tasks-vision/../../../../meshfer/web.py"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + path)
        assert err.value.code == 404, path


@needs_browser
def test_page_equals_predict_json_on_30_photos(server) -> None:
    """The parity target: probabilities within 0.02 of `meshfer predict --json`, the label on >= 29 of 30."""
    from playwright.sync_api import sync_playwright

    photos = [p for files in sample_images(PHOTOS, 5).values() for p in files]
    assert len(photos) == 30
    proc = subprocess.run([sys.executable, "-m", "meshfer", "predict", "--json", *map(str, photos)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    expected = [json.loads(line) for line in proc.stdout.splitlines()]
    with sync_playwright() as pw:
        browser = _browser(pw)
        page, errors = _open(browser, server.url)
        page.set_input_files("#file", [str(p) for p in photos])  # as a user opens them
        got = page.evaluate("window.meshfer.lastRun")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-page-photos.png"), full_page=True)
        browser.close()
    assert not errors
    assert [g["image"] for g in got] == [p.name for p in photos]
    assert [g["face"] for g in got] == [e["face"] for e in expected]
    faces = [(g, e) for g, e in zip(got, expected) if e["face"]]
    assert len(faces) >= 28
    worst = max(abs(g["expression"]["probabilities"][k] - v) for g, e in faces for k, v in e["expression"]["probabilities"].items())
    agree = sum(g["expression"]["label"] == e["expression"]["label"] for g, e in faces)
    print(f"\nweb page vs meshfer predict --json on {len(faces)} photos: largest probability difference {worst:.4f}, "
          f"labels agree on {agree}")
    assert worst <= 0.02 and agree >= len(faces) - 1
    # The companion tasks come out of the same graph: their labels agree too, the gaze within 0.05
    for task in ("mouth",):
        assert sum(g[task]["label"] == e[task]["label"] for g, e in faces) >= len(faces) - 1
    assert sum(g["eyes"][s]["label"] == e["eyes"][s]["label"] for g, e in faces for s in ("left", "right")) >= 2 * len(faces) - 3
    assert max(abs(g["gaze"][k] - e["gaze"][k]) for g, e in faces for k in ("x", "y")) < 0.05


def _letterbox(path: Path, width: int = 640, height: int = 480) -> np.ndarray:
    img = cv2.imread(str(path))
    h, w = img.shape[:2]
    s = min(width / w, height / h)
    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), np.uint8)
    y, x = (height - img.shape[0]) // 2, (width - img.shape[1]) // 2
    out[y : y + img.shape[0], x : x + img.shape[1]] = img
    return out


def _write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """A raw YUV 4:2:0 video, the format Chromium's fake camera plays."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            fh.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


@needs_browser
def test_fake_webcam_stream(server, tmp_path: Path) -> None:
    """Chromium's fake camera plays a clip (1.5 s of a smiling face, 1.5 s of a surprised one, looped):
    the page finds the face in every frame, follows the expression and the mouth, and its summary
    counts what its timeline holds."""
    from playwright.sync_api import sync_playwright

    from meshfer.predict import Predictor

    happy, surprised = PHOTOS / "face_happy" / "Adrien_Brody_0001.jpg", sorted((PHOTOS / "face_surprised").iterdir())[0]
    with Predictor() as predictor:  # what Python says of each still
        ref = [predictor.predict_image(cv2.cvtColor(_letterbox(p), cv2.COLOR_BGR2RGB)).prediction for p in (happy, surprised)]
    assert [r.expression.label for r in ref] == ["happy", "surprised"]
    assert [r.mouth.label for r in ref] == ["closed", "open"]
    clip = tmp_path / "camera.y4m"
    _write_y4m(clip, [_letterbox(happy)] * 15 + [_letterbox(surprised)] * 15)
    with sync_playwright() as pw:
        browser = _browser(pw, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                           f"--use-file-for-fake-video-capture={clip}")
        page, errors = _open(browser, server.url)
        page.evaluate("() => { window.meshfer.lastRun = window.meshfer.startWebcam(); }")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # at least two passes of the clip
            if page.evaluate("window.meshfer.records.length ? window.meshfer.records.at(-1).timestamp_s : 0") > 6.5:
                break
            time.sleep(0.5)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-page-webcam.png"), full_page=True)
        page.evaluate("window.meshfer.stop()")
        summary = page.evaluate("window.meshfer.lastRun")
        records = page.evaluate("window.meshfer.records")
        text = page.inner_text("#summary")
        stats = page.evaluate("window.meshfer.stats")
        browser.close()
    assert not errors
    print(f"\nfake webcam: {summary['frames']} frames at {stats['fps']:.1f} fps; {summary['expression_shares']}")
    assert summary["frames"] == len(records) >= 20 and summary["interrupted"] is True
    assert summary["faces"] >= 0.9 * summary["frames"]
    shares = summary["expression_shares"]
    assert shares["happy"] > 0.25 and shares["surprised"] > 0.25 and shares["happy"] + shares["surprised"] > 0.9
    mouth = [r["mouth"] for r in records if r["face"]]
    assert mouth.count("open") >= 3 and mouth.count("closed") >= 3
    assert summary["blinks"] == 0 and summary["perclos"] == 0.0  # open eyes in both stills
    assert f"frames:          {summary['frames']}" in text and "attention:" in text


@needs_browser
def test_bad_image_gets_its_row_and_the_rest_goes_on(server, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    photo = PHOTOS / "face_happy" / "Adrien_Brody_0001.jpg"
    with sync_playwright() as pw:
        browser = _browser(pw)
        page, errors = _open(browser, server.url)
        page.set_input_files("#file", [str(broken), str(photo)])
        got = page.evaluate("window.meshfer.lastRun")
        rows = page.inner_text("#images tbody")
        browser.close()
    assert not errors
    assert got[0] == {"image": "broken.jpg", "face": False, "reason": "unreadable image"}
    assert got[1]["face"] and got[1]["expression"]["label"] == "happy"
    assert "broken.jpg\tunreadable image" in rows


@needs_browser
def test_video_file(server, tmp_path: Path) -> None:
    """A video file opened in the page plays through to its end: its frames are timed by the file (6 s here,
    as `meshfer video` reads it), both faces' expressions are followed, and the run ends by itself."""
    from playwright.sync_api import sync_playwright

    happy, surprised = PHOTOS / "face_happy" / "Adrien_Brody_0001.jpg", sorted((PHOTOS / "face_surprised").iterdir())[0]
    clip = tmp_path / "clip.webm"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"VP80"), 10, (640, 480))
    if not writer.isOpened():
        pytest.skip("OpenCV cannot write a WebM (VP8) clip here")
    for frame in ([_letterbox(happy)] * 15 + [_letterbox(surprised)] * 15) * 2:
        writer.write(frame)
    writer.release()
    with sync_playwright() as pw:
        browser = _browser(pw, "--autoplay-policy=no-user-gesture-required")
        page, errors = _open(browser, server.url)
        page.set_input_files("#file", [str(clip)])
        summary = page.evaluate("window.meshfer.lastRun")
        browser.close()
    assert not errors
    print(f"\nvideo file: {summary['frames']} of 60 frames analysed in real time; {summary['expression_shares']}")
    assert summary["interrupted"] is False and summary["frames"] >= 20 and summary["faces"] == summary["frames"]
    assert abs(summary["duration_s"] - 6.0) < 0.3
    shares = summary["expression_shares"]
    assert shares["happy"] > 0.3 and shares["surprised"] > 0.3


@needs_browser
def test_turned_group_and_large_photos_as_python(server, tmp_path: Path) -> None:
    """What phone and group photos bring: an EXIF orientation (applied in both), two faces (the largest
    one read in both), more pixels than max_side (shrunk in both): the page's results are still
    `meshfer predict --json`'s."""
    from PIL import Image
    from playwright.sync_api import sync_playwright

    face = Image.open(PHOTOS / "face_happy" / "Adrien_Brody_0001.jpg").convert("RGB")
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: the pixels are stored turned the other way
    upright = Image.new("RGB", (350, 420), (90, 90, 90))
    upright.paste(face, (0, 35))
    upright.transpose(Image.Transpose.ROTATE_90).save(turned, quality=95, exif=exif)  # stored 420 x 350
    other = Image.open(sorted((PHOTOS / "face_surprised").iterdir())[0]).convert("RGB")
    group = Image.new("RGB", (760, 360), (90, 90, 90))  # a smaller surprised face beside the larger smile
    group.paste(other.resize((260, 260)), (10, 50))
    group.paste(face, (410, 5))
    group_path = tmp_path / "group.jpg"
    group.save(group_path, quality=95)
    big = tmp_path / "big.jpg"  # past max_side: shrunk before the landmarker (the browser's resampling, not OpenCV's)
    face.resize((2450, 2275), Image.Resampling.BICUBIC).save(big, quality=92)
    files = [str(turned), str(group_path), str(big)]
    proc = subprocess.run([sys.executable, "-m", "meshfer", "predict", "--json", *files], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    expected = [json.loads(line) for line in proc.stdout.splitlines()]
    with sync_playwright() as pw:
        browser = _browser(pw)
        page, errors = _open(browser, server.url)
        page.set_input_files("#file", files)
        got = page.evaluate("window.meshfer.lastRun")
        browser.close()
    assert not errors
    assert [e["expression"]["label"] for e in expected] == ["happy"] * 3 and expected[1]["faces_found"] == 2
    assert [g["image_size"] for g in got] == [[350, 420], [760, 360], [2450, 2275]]
    for g, e in zip(got, expected):
        assert g["faces_found"] == e["faces_found"] and g["expression"]["label"] == e["expression"]["label"]
        assert max(abs(g["expression"]["probabilities"][k] - v) for k, v in e["expression"]["probabilities"].items()) <= 0.02


@needs_browser
def test_graph_in_the_page_thread_equals_the_worker(server) -> None:
    """`?worker=0` runs the graph in the page's own thread (on 2 threads): the same results as in the worker."""
    from playwright.sync_api import sync_playwright

    photos = [str(p) for files in sample_images(PHOTOS, 1).values() for p in files]
    with sync_playwright() as pw:
        browser = _browser(pw)
        got = {}
        for query in ("", "?worker=0&threads=2"):
            page, errors = _open(browser, server.url + query)
            worker, threads = page.evaluate("[window.meshfer.pipeline.worker, window.meshfer.pipeline.threads]")
            assert worker is (not query) and (threads == 2 or not query)
            page.set_input_files("#file", photos)
            got[query] = page.evaluate("window.meshfer.lastRun")
            assert not errors
        browser.close()
    worker, in_page = got.values()
    assert [g["expression"]["label"] for g in worker] == [g["expression"]["label"] for g in in_page]
    assert max(abs(a["expression"]["probabilities"][k] - v) for a, b in zip(worker, in_page)
               for k, v in b["expression"]["probabilities"].items()) < 1e-5
