"""Bad input and faults, tried as a careful user would: a corpus of damaged, unusual, huge, tiny,
faceless and oddly named images, links and special files (built here from real images), bad
landmarker bundles and model cards, read-only and full disks (small tmpfs mounts), and signals,
run through ``meshfer predict|extract|evaluate|sort|video`` and ``augment.py``.

What must hold everywhere: no traceback, every input accounted for exactly once (a result, or a
line saying why it was skipped), and no file of the user's changed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from badinputs import flat_jpeg, png_header_only, rearranged_bundle, snapshot
from conftest import FER_VAL, LANDMARKER, PHOTOS, REPO, sample_images

AUGMENT = REPO / "augment.py"
PHOTO = sorted((PHOTOS / "face_happy").iterdir())[0]
OTHER_PHOTO = sorted((PHOTOS / "face_sad").iterdir())[0]
NON_UTF8 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name, not valid UTF-8


def meshfer(*args: object, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "MESHFER_LANDMARKER": str(LANDMARKER)}
    streams = {} if ("stdout" in kw or "stderr" in kw) else {"capture_output": True}
    return subprocess.run([sys.executable, "-m", "meshfer", *map(str, args)], text=True, errors="backslashreplace",
                          timeout=timeout, env=env, cwd=REPO, **streams, **kw)


def clean(proc: subprocess.CompletedProcess) -> None:
    """No traceback anywhere in what the command printed."""
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in (stream or ""), stream
        assert "Stack trace" not in (stream or ""), stream


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    clean(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("meshfer: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# The corpus


def _rgb(path: Path) -> np.ndarray:
    from meshfer.images import read_image

    return read_image(path)


def _write(path: Path, image: np.ndarray, **params) -> Path:
    from PIL import Image

    Image.fromarray(image).save(path, **params)
    return path


def build_corpus(root: Path) -> dict[str, str]:
    """A data root whose face_happy folder holds every kind of bad (and unusual but good) input.
    Returns file name -> what extraction must make of it: 'ok' (a face), 'decoded' (ok or no
    face), 'no_face', 'unreadable', or 'skipped' (reported while scanning)."""
    import cv2
    from PIL import Image

    happy = root / "face_happy"
    happy.mkdir(parents=True)
    (root / "face_empty").mkdir()
    sad = root / "face_sad"
    sad.mkdir()
    for f in sample_images(FER_VAL, 2)["sad"]:
        shutil.copy2(f, sad / f.name)
    photo = _rgb(PHOTO)
    data = PHOTO.read_bytes()
    expect: dict[str, str] = {}

    def put(name: str, content: bytes, outcome: str) -> None:
        (happy / name).write_bytes(content)
        expect[name] = outcome

    put("good_photo.jpg", data, "ok")
    shutil.copy2(sample_images(FER_VAL, 1)["happy"][0], happy / "good_fer.jpg")
    expect["good_fer.jpg"] = "decoded"
    put("truncated.jpg", data[: len(data) // 2], "unreadable")
    damaged = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 40):
        damaged[i] ^= 0x55
    put("corrupt_data.jpg", bytes(damaged), "decoded")  # libjpeg warns, the image decodes
    put("empty.jpg", b"", "unreadable")
    put("text.jpg", b"this is not a JPEG\n", "unreadable")
    put("garbage_appended.jpg", data + os.urandom(2000), "ok")
    ok, png = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    put("png_named.jpg", png.tobytes(), "ok")
    _write(happy / "rgba.png", np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)])); expect["rgba.png"] = "ok"
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(happy / "grey16.png"), grey.astype(np.uint16) * 257); expect["grey16.png"] = "ok"
    Image.fromarray(grey.astype(np.float32) / 255.0, mode="F").save(happy / "float32.tif"); expect["float32.tif"] = "ok"
    Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE).save(happy / "palette.gif")
    expect["palette.gif"] = "decoded"
    Image.fromarray(photo).convert("CMYK").save(happy / "cmyk.jpg"); expect["cmyk.jpg"] = "ok"
    _write(happy / "progressive.jpg", photo, progressive=True, quality=90); expect["progressive.jpg"] = "ok"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(photo[:, 20:]).transpose(Image.Transpose.ROTATE_90).save(happy / "exif_rotated.jpg", exif=exif)
    expect["exif_rotated.jpg"] = "ok"
    _write(happy / "photo.webp", photo); expect["photo.webp"] = "ok"
    _write(happy / "photo.bmp", photo); expect["photo.bmp"] = "ok"
    put("huge_20000.jpg", flat_jpeg(20000, 20000), "no_face")
    put("huge_header.png", png_header_only(30000, 30000), "unreadable")
    put("giant_header.jpg", flat_jpeg(65000, 65000, scan=False), "unreadable")
    _write(happy / "tiny_1x1.png", np.full((1, 1, 3), 128, np.uint8)); expect["tiny_1x1.png"] = "no_face"
    _write(happy / "tiny_3x3.jpg", np.full((3, 3, 3), 128, np.uint8)); expect["tiny_3x3.jpg"] = "no_face"
    _write(happy / "blank.png", np.full((200, 200, 3), 127, np.uint8)); expect["blank.png"] = "no_face"
    two = _rgb(OTHER_PHOTO)
    small = cv2.resize(two, (two.shape[1] // 2, two.shape[0] // 2))
    canvas = np.full((photo.shape[0], photo.shape[1] + small.shape[1] + 20, 3), 255, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    canvas[:, small.shape[1] + 20 :] = photo
    _write(happy / "two_faces.jpg", canvas, quality=92); expect["two_faces.jpg"] = "ok"
    for name in ("name with spaces ü.jpg", "-starts-with-dash.jpg", "UPPER.JPG", "x" * 200 + ".jpg",
                 "new\nline.jpg", NON_UTF8):
        put(name, data, "ok")
    (happy / "link_good.jpg").symlink_to(happy / "good_photo.jpg"); expect["link_good.jpg"] = "ok"
    (happy / "dangling.jpg").symlink_to(happy / "nowhere.jpg"); expect["dangling.jpg"] = "unreadable"
    (happy / "loop.jpg").symlink_to(happy / "loop.jpg"); expect["loop.jpg"] = "unreadable"
    (happy / "device.jpg").symlink_to("/dev/zero"); expect["device.jpg"] = "unreadable"
    os.mkfifo(happy / "fifo.jpg"); expect["fifo.jpg"] = "unreadable"
    (happy / "folder.jpg").mkdir(); expect["folder.jpg"] = "skipped"
    put("notes.txt", b"not an image\n", "skipped")
    return expect


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("corpus") / "data"
    expect = build_corpus(root)
    assert len(expect) >= 35
    return root, expect


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory: pytest.TempPathFactory):
    """``meshfer extract`` on the corpus (two workers), as a user runs it."""
    root, _ = corpus
    before = snapshot(root)
    out = tmp_path_factory.mktemp("out") / "meshes.npz"
    proc = meshfer("extract", root, "-o", out, "--json", "--workers", "2")
    assert snapshot(root) == before
    return proc, out


def test_extract_accounts_for_every_input_once(corpus, extracted) -> None:
    from meshfer.meshtable import MeshTable

    root, expect = corpus
    proc, out = extracted
    clean(proc)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    table = MeshTable.load(out)
    happy = root / "face_happy"
    rows = {Path(p).name: (str(s), str(e)) for p, s, e in zip(table.paths, table.status, table.errors)
            if Path(p).parent == happy}
    skipped = [Path(s["file"]) for s in summary["skipped"]]
    # Every entry of the class folders is a row or a skipped line, exactly once.
    names = [str(p) for p in table.paths] + [str(s) for s in skipped]
    assert len(names) == len(set(names))
    for name, outcome in expect.items():
        path = happy / name
        if outcome == "skipped":
            assert path in skipped and name not in rows, name
            continue
        assert name in rows, name
        status, error = rows[name]
        if outcome == "decoded":
            assert status in ("ok", "no_face"), (name, error)
        else:
            assert status == outcome, (name, status, error)
    assert root / "face_empty" in skipped
    assert len(table) == len(rows) + 2  # and the two FER images of face_sad
    reasons = {name: rows[name][1] for name in rows}
    assert "too large" in reasons["huge_header.png"] and "too large" in reasons["giant_header.jpg"]
    assert reasons["fifo.jpg"] == "not a regular file (a named pipe, FIFO)"
    assert reasons["loop.jpg"] == "symbolic link loop"
    assert reasons["dangling.jpg"].startswith("dangling symbolic link")
    assert reasons["device.jpg"] == "not a regular file (a character device)"
    assert reasons["empty.jpg"] == "empty file"
    # The huge JPEG was decoded at reduced size and keeps its real size; two faces: the largest.
    i = int(np.flatnonzero(table.paths == str(happy / "huge_20000.jpg"))[0])
    assert tuple(table.image_sizes[i]) == (20000, 20000)
    j = int(np.flatnonzero(table.paths == str(happy / "two_faces.jpg"))[0])
    assert table.faces_found[j] == 2 and table.landmarks[j, :, 0].mean() > 0.5  # the big face, on the right
    assert summary["several_faces"] == 1
    # libjpeg's warning names the file it is about.
    warnings = [line for line in proc.stderr.splitlines() if "Corrupt JPEG data" in line]
    assert warnings and all("corrupt_data.jpg" in line for line in warnings)


def test_extract_rerun_does_not_retry_bad_files(corpus, extracted) -> None:
    root, _ = corpus
    _, out = extracted
    again = meshfer("extract", root, "-o", out, "--json", "--workers", "1")
    clean(again)
    assert again.returncode == 0
    summary = json.loads(again.stdout)
    # Only the two links that lead nowhere (no size or time to key them by) are looked at again.
    assert summary["processed"] == 2 and summary["cached"] == summary["n_images"] - 2


def test_predict_reports_every_input_once(corpus) -> None:
    root, expect = corpus
    happy = root / "face_happy"
    before = snapshot(root)
    extra = [happy / "fifo.jpg", happy / "loop.jpg", happy / "dangling.jpg", happy / "missing.jpg"]
    proc = meshfer("predict", "--json", "--eyes", "none", "--gaze", "none", "--mouth", "none", happy, *extra)
    clean(proc)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(root) == before
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    seen = [line["image"] for line in lines]
    files = [str(p) for p in happy.iterdir() if not p.is_dir() or p.is_symlink()]
    for f in files:  # every entry of the folder once, plus each explicit input once more
        assert seen.count(f) == 1 + (Path(f) in extra), f
    assert seen.count(str(happy / "missing.jpg")) == 1
    by_name: dict[str, list[dict]] = {}
    for line in lines:
        by_name.setdefault(Path(line["image"]).name, []).append(line)
    reasons = {name: [line.get("reason") for line in found] for name, found in by_name.items()}
    assert reasons["missing.jpg"] == ["no such file or folder"]
    assert all(r == "not a regular file (a named pipe, FIFO)" or "named pipe" in r for r in reasons["fifo.jpg"])
    assert all("symbolic link loop" in r for r in reasons["loop.jpg"])
    assert all("dangling symbolic link" in r for r in reasons["dangling.jpg"])
    assert reasons["notes.txt"] == ["not an image file (extension)"]
    two = by_name["two_faces.jpg"][0]
    assert two["face"] is True and two["faces_found"] == 2
    for name, outcome in expect.items():
        if outcome == "ok":
            assert by_name[name][0]["face"] is True, (name, by_name[name])


def test_evaluate_and_sort_on_the_corpus(corpus, extracted, tmp_path: Path) -> None:
    import csv

    root, _ = corpus
    _, out = extracted
    before = snapshot(root)
    ev = meshfer("evaluate", root, "--json", "--no-progress", "--meshes", out)
    clean(ev)
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["n_images"] > 0
    srt = meshfer("sort", "eyes", root / "face_happy", tmp_path / "sorted", "--json", "--quiet")
    clean(srt)
    assert srt.returncode == 0, srt.stderr
    result = json.loads(srt.stdout)
    with open(result["csv"], newline="", encoding="utf-8", errors="surrogateescape") as f:
        sources = [row["source"] for row in csv.DictReader(f)]
    assert len(sources) == len(set(sources))
    assert snapshot(root) == before


def test_augment_skips_what_it_cannot_use_and_reruns_finish_the_job(tmp_path: Path) -> None:
    build_corpus(tmp_path / "data")  # a corpus of its own: augment.py writes into it
    folder = tmp_path / "data" / "face_happy"
    before = snapshot(folder)
    proc = subprocess.run([sys.executable, str(AUGMENT), str(folder), "--no-progress"], capture_output=True,
                          text=True, errors="backslashreplace", timeout=600, cwd=tmp_path)
    assert "Traceback" not in proc.stderr and proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    for name in ("tiny_1x1.png", "tiny_3x3.jpg"):
        assert any(name in line and "too small" in line for line in skipped), proc.stderr
    for name in ("fifo.jpg", "loop.jpg", "dangling.jpg", "device.jpg", "truncated.jpg", "huge_20000.jpg"):
        assert sum(name in line for line in skipped) == 1, (name, proc.stderr)
    after = snapshot(folder)
    assert all(after[k] == v for k, v in before.items())  # nothing changed, only copies added
    written = sorted(k for k in after if k not in before)
    assert written and all(k.startswith("augmented") for k in written)
    again = subprocess.run([sys.executable, str(AUGMENT), str(folder), "--no-progress"], capture_output=True,
                           text=True, errors="backslashreplace", timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and "0 augmented copies written" in again.stdout, again.stdout
    assert snapshot(folder) == after


def test_video_bad_sources_and_outputs(tmp_path: Path) -> None:
    from meshfer.benchmark import synthetic_clip

    clip = tmp_path / "clip.mp4"
    synthetic_clip([PHOTO], clip, frames_per_face=6, fps=10.0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    (tmp_path / "text.mp4").write_text("not a video\n")
    (tmp_path / "empty.mp4").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    for name in ("text.mp4", "empty.mp4", "fifo.mp4", "dangling.mp4"):
        proc = meshfer("video", tmp_path / name, "--no-progress", timeout=120)
        one_line_error(proc, name)
    proc = meshfer("video", cut, "--json", "--no-progress")
    if proc.returncode == 2:  # the container cannot be opened at all: one line
        one_line_error(proc, "cut.mp4")
    else:
        clean(proc)
        assert proc.returncode in (0, 1), proc.stderr
    # Outputs that cannot be written are refused before the analysis; the clip itself is never one.
    for args, needle in (
        (["--plot", tmp_path / "timeline.xyz"], "format matplotlib writes"),
        (["--plot", tmp_path / "clip.mp4" / "x.png"], "clip.mp4"),
        (["--csv", tmp_path], "is a folder"),
        (["--output", clip], "the video being read"),
    ):
        before = clip.read_bytes()
        proc = meshfer("video", clip, "--no-progress", *args)
        one_line_error(proc, needle)
        assert "faces found" not in proc.stdout and clip.read_bytes() == before
    proc = meshfer("video", clip, "--max-blink", "-3")
    clean(proc)
    assert proc.returncode == 2 and "must be a positive number" in proc.stderr


def test_bad_landmarker_bundles_are_one_line(tmp_path: Path) -> None:
    bundles = {
        "swapped.task": rearranged_bundle(LANDMARKER, tmp_path / "swapped.task", {
            "face_detector.tflite": "face_landmarks_detector.tflite",
            "face_landmarks_detector.tflite": "face_detector.tflite"}),
        "two_detectors.task": rearranged_bundle(LANDMARKER, tmp_path / "two_detectors.task", {
            "face_landmarks_detector.tflite": "face_detector.tflite"}),
        "blendshapes_swapped.task": rearranged_bundle(LANDMARKER, tmp_path / "blendshapes_swapped.task", {
            "face_landmarks_detector.tflite": "face_blendshapes.tflite",
            "face_blendshapes.tflite": "face_landmarks_detector.tflite"}),
    }
    (tmp_path / "truncated.task").write_bytes(LANDMARKER.read_bytes()[:100_000])
    (tmp_path / "folder.task").mkdir()
    (tmp_path / "dangling.task").symlink_to(tmp_path / "nowhere.task")
    names = [*bundles, "truncated.task", "folder.task", "dangling.task"]
    for name in names:
        proc = meshfer("predict", PHOTO, "--landmarker", tmp_path / name, "--json")
        one_line_error(proc, name)
        assert proc.stderr.count("\n") == 1, proc.stderr
    proc = meshfer("extract", tmp_path, "-o", tmp_path / "m.npz", "--landmarker", tmp_path / "swapped.task")
    one_line_error(proc, "swapped.task", "face_detector.tflite")


def test_bad_model_cards_are_refused_naming_the_card(tmp_path: Path) -> None:
    from meshfer.models import get_card

    card = get_card("logreg")
    base = json.loads(card.path.read_text())
    shutil.copy2(card.model_path, tmp_path / card.file)
    cases = {
        "label_removed": {"labels": base["labels"][:-1]},
        "labels_string": {"labels": "happy"},
        "labels_repeated": {"labels": base["labels"][:-1] + base["labels"][:1]},
        "wrong_width": {"n_features": base["n_features"] + 1},
        "unknown_features": {"feature_set": "no_such_features"},
        "other_features": {"feature_set": "blendshapes_keypoints", "n_features": 3707},
        "unknown_task": {"task": "smile"},
        "unknown_format": {"format": "pickle"},
        "bad_sha": {"sha256": "abc"},
        "wrong_sha": {"sha256": "0" * 64},
        "missing_file": {"file": "nowhere.onnx"},
        "hybrid_without_crop": {"format": "onnx-hybrid"},
    }
    for name, change in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**base, **change}))
        proc = meshfer("predict", PHOTO, "--model", path, "--eyes", "none", "--gaze", "none", "--mouth", "none")
        line = one_line_error(proc)
        assert name in line or "nowhere.onnx" in line or card.file in line, line
    (tmp_path / "not_json.json").write_text("{")
    one_line_error(meshfer("predict", PHOTO, "--model", tmp_path / "not_json.json"), "not_json.json")


def test_output_of_another_data_set_is_not_replaced(tmp_path: Path) -> None:
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    for root, label, offset in ((root_a, "happy", 0), (root_b, "sad", 5)):
        (root / f"face_{label}").mkdir(parents=True)
        for f in sample_images(FER_VAL, 2, offset)[label]:
            shutil.copy2(f, root / f"face_{label}" / f.name)
    out = tmp_path / "meshes_of_a.npz"
    first = meshfer("extract", root_a, "-o", out, "--no-progress", "--workers", "1")
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    one_line_error(meshfer("extract", root_b, "-o", out, "--no-progress"), "meshes_of_a.npz", "--overwrite")
    assert out.read_bytes() == before
    one_line_error(meshfer("evaluate", root_b, "--meshes", out, "--no-progress"), "--overwrite")
    assert out.read_bytes() == before
    # Part of the same data (another split of it): a cache keeps the rest of its rows.
    from meshfer.datasets import Dataset, scan_dataset
    from meshfer.extract import extract
    from meshfer.meshtable import MeshTable

    full = scan_dataset(root_a)
    part = extract(Dataset(full.root, full.records[:1], full.labels), out, other_rows="refuse-foreign",
                   workers=1, progress=False)
    assert len(part) == 1 and len(MeshTable.load(out)) == 2
    proc = meshfer("extract", root_b, "-o", out, "--no-progress", "--overwrite", "--json", "--workers", "1")
    assert proc.returncode == 0 and json.loads(proc.stdout)["n_images"] == 2


def test_smaller_cases(tmp_path: Path) -> None:
    # sort into an existing file; evaluate on empty class folders; stdout on a full device
    dest = tmp_path / "dest.txt"
    dest.write_text("mine\n")
    (tmp_path / "src").mkdir()
    shutil.copy2(PHOTO, tmp_path / "src" / PHOTO.name)
    one_line_error(meshfer("sort", "eyes", tmp_path / "src", dest), "dest.txt", "not a folder")
    assert dest.read_text() == "mine\n"
    (tmp_path / "empty" / "face_happy").mkdir(parents=True)
    (tmp_path / "empty" / "face_sad").mkdir()
    proc = meshfer("evaluate", tmp_path / "empty", "--json")
    clean(proc)
    assert proc.returncode == 2 and "no images to evaluate" in proc.stderr and proc.stdout == ""
    if Path("/dev/full").exists():
        with open("/dev/full", "w") as full:
            proc = meshfer("predict", PHOTO, "--json", stdout=full, stderr=subprocess.PIPE)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == ["meshfer: error: cannot write to standard output (No space left on device)"]


def test_huge_and_deep_images_in_process(tmp_path: Path, landmarker) -> None:
    from meshfer.errors import ImageReadError
    from meshfer.images import MAX_SIDE, load_image, probe_image, read_image

    huge = tmp_path / "huge.jpg"
    huge.write_bytes(flat_jpeg(20000, 20000))
    image, size = load_image(huge, max_side=MAX_SIDE)
    assert size == (20000, 20000) and max(image.shape[:2]) == MAX_SIDE
    with pytest.raises(ImageReadError, match="too large to decode"):
        read_image(huge)  # at full size it would take 1.2 GB: refused before decoding
    header = probe_image(np.frombuffer(flat_jpeg(65000, 65000, scan=False), np.uint8))
    assert header is not None and (header.width, header.height) == (65000, 65000)
    deep = tmp_path / "float.tif"
    from PIL import Image

    grey = read_image(PHOTO)[:, :, 0]
    Image.fromarray(grey.astype(np.float32) / 255.0, mode="F").save(deep)
    back = read_image(deep)
    assert abs(float(back[:, :, 0].astype(int).mean()) - float(grey.mean())) < 2  # not black
    assert landmarker.detect(deep)


# ------------------------------------------------------------------------------------------------
# Read-only and full disks (small tmpfs mounts; root ignores file permissions)


@pytest.fixture
def tmpfs(tmp_path: Path):
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) to mount a small tmpfs (read-only and full disks)")
    mounted: list[Path] = []

    def mount(name: str, size: str = "4m", ro: bool = False) -> Path:
        target = tmp_path / name
        target.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode})")
        mounted.append(target)
        return target

    mount.remount_ro = lambda target: subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True)  # type: ignore[attr-defined]
    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _fer_root(root: Path, per_class: int) -> Path:
    for label, files in sample_images(FER_VAL, per_class).items():
        (root / f"face_{label}").mkdir(parents=True)
        for f in files:
            shutil.copy2(f, root / f"face_{label}" / f.name)
    return root


def test_read_only_outputs_fail_before_any_work(tmpfs, tmp_path: Path) -> None:
    root = _fer_root(tmp_path / "data", 2)
    ro = tmpfs("ro", ro=True)
    proc = meshfer("extract", root, "-o", ro / "m.npz")
    one_line_error(proc, "m.npz", "Read-only file system")
    assert "Extracting" not in proc.stderr  # refused before the first image
    one_line_error(meshfer("evaluate", root, "--meshes", ro / "m.npz"), "Read-only file system")
    one_line_error(meshfer("sort", "eyes", root / "face_happy", ro / "sorted"), "Read-only file system")
    from meshfer.benchmark import synthetic_clip

    clip = tmp_path / "clip.mp4"
    synthetic_clip([PHOTO], clip, frames_per_face=4, fps=10.0)
    for option in ("--plot", "--csv", "--output"):
        proc = meshfer("video", clip, "--no-progress", option, ro / "out.png")
        one_line_error(proc, "Read-only file system")
    # augment.py on a folder that became read-only
    folder = tmpfs("aug", size="8m")
    for f in sample_images(FER_VAL, 2)["sad"]:
        shutil.copy2(f, folder / f.name)
    tmpfs.remount_ro(folder)
    proc = subprocess.run([sys.executable, str(AUGMENT), str(folder), "--no-progress"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Read-only file system" in proc.stderr


def test_full_disks(tmpfs, tmp_path: Path) -> None:
    root = _fer_root(tmp_path / "data", 2)
    full = tmpfs("full", size="1m")
    _fill(full)
    proc = meshfer("extract", root, "-o", full / "m.npz")
    one_line_error(proc, "m.npz", "No space left on device")
    assert not (full / "m.npz").exists() and not (full / "m.npz.parts").exists()
    from meshfer.benchmark import synthetic_clip

    clip = tmp_path / "clip.mp4"
    synthetic_clip([PHOTO], clip, frames_per_face=4, fps=10.0)
    proc = meshfer("video", clip, "--no-progress", "--plot", full / "timeline.png", "--json")
    one_line_error(proc, "No space left on device")
    assert proc.stdout == ""  # refused before the analysis
    # Room for the check but not for the plot: the summary is printed all the same, then one line.
    tight = tmpfs("tight", size="1m")
    _fill_leaving(tight, 12 * 1024)
    proc = meshfer("video", clip, "--no-progress", "--plot", tight / "timeline.png", "--json")
    one_line_error(proc, "timeline.png", "No space left on device")
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 4 and "plot" not in summary
    assert sorted(p.name for p in tight.iterdir()) == ["filler"]  # no cut-off plot, no temporary file
    # --output on a disk that fills: OpenCV's writer says nothing, meshfer notices and keeps no cut-off video
    vid = tmpfs("vid", size="1m")
    _fill_leaving(vid, 64 * 1024)
    proc = meshfer("video", clip, "--no-progress", "--output", vid / "out.mp4", "--json")
    one_line_error(proc, "out.mp4", "No space left on device")
    summary = json.loads(proc.stdout)
    assert summary["frames"] == 4 and "output" not in summary
    assert sorted(p.name for p in vid.iterdir()) == ["filler"]
    # augment.py: a disk that fills up leaves only complete copies, and a re-run finishes the job
    folder = tmpfs("aug", size="512k")
    for f in sample_images(FER_VAL, 30)["happy"]:
        shutil.copy2(f, folder / f.name)
    _fill_leaving(folder, 24 * 1024)
    proc = subprocess.run([sys.executable, str(AUGMENT), str(folder), "--no-progress"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "No space left on device" in proc.stderr
    import cv2

    copies = [p for p in folder.iterdir() if p.name.startswith("augmented")]
    assert 0 < len(copies) < 30  # the disk filled up part way
    assert all(cv2.imread(str(p)) is not None for p in copies)  # no truncated copy
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    (folder / "filler").unlink()
    again = subprocess.run([sys.executable, str(AUGMENT), str(folder), "--no-progress"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len([p for p in folder.iterdir() if p.name.startswith("augmented")]) == 30


def _fill_leaving(folder: Path, free: int) -> None:
    """Fill ``folder``'s file system but for about ``free`` bytes."""
    st = os.statvfs(folder)
    size = max(st.f_bavail * st.f_frsize - free, 0)
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------
# A disk that fills up during an extraction, and signals


def _start_extract(root: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "MESHFER_LANDMARKER": str(LANDMARKER)}
    return subprocess.Popen([sys.executable, "-m", "meshfer", "extract", str(root), "-o", str(out), "--no-progress",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)


def _wait_for_part(proc: subprocess.Popen, parts: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and any(parts.glob("part-*.npz")):
            return
        time.sleep(0.05)
    assert proc.poll() is None, "the extraction ended before it could be interrupted"
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory):
    """A data root of up to 90 FER-2013 images per class (596: a run of several seconds, to be
    interrupted after its first checkpoint) and its extraction without any fault."""
    from meshfer.extract import extract

    root = _fer_root(tmp_path_factory.mktemp("signals") / "data", 90)
    return root, extract(root, None, workers=1, progress=False)


def _same_as_clean(out: Path, clean_table) -> None:
    from meshfer.meshtable import MeshTable

    table = MeshTable.load(out)
    assert len(set(table.paths)) == len(table) == len(clean_table)
    assert np.array_equal(table.paths, clean_table.paths)
    assert np.array_equal(table.status, clean_table.status)
    assert np.allclose(table.landmarks, clean_table.landmarks, atol=1e-4, equal_nan=True)
    assert table.meta["complete"] is True


def test_disk_full_during_extraction_keeps_what_was_done(tmpfs, clean_run) -> None:
    root, clean_table = clean_run
    disk = tmpfs("disk", size="16m")
    out = disk / "m.npz"
    proc = _start_extract(root, out, "--workers", "1")
    try:
        _wait_for_part(proc, disk / "m.npz.parts")
        filler = _fill(disk)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("meshfer: error:")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "saved so far" in lines[0], stderr
    filler.unlink()
    again = meshfer("extract", root, "-o", out, "--no-progress", "--json")
    clean(again)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cached"] > 0
    _same_as_clean(out, clean_table)
    assert not (disk / "m.npz.parts").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signals_during_extraction(clean_run, tmp_path: Path, sig: int) -> None:
    root, clean_table = clean_run
    out = tmp_path / "m.npz"
    proc = _start_extract(root, out, "--workers", "2")
    try:
        _wait_for_part(proc, tmp_path / "m.npz.parts")
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers, no chance to save
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + sig and "Traceback" not in stderr, stderr
        assert "interrupted: what was extracted is saved" in stderr
        assert out.exists() and not (tmp_path / "m.npz.parts").exists()
    else:
        assert proc.returncode == -signal.SIGKILL
        assert any((tmp_path / "m.npz.parts").glob("part-*.npz"))  # what was checkpointed
    again = meshfer("extract", root, "-o", out, "--no-progress", "--json", "--workers", "2")
    clean(again)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["cached"] > 0 and summary["processed"] + summary["cached"] == len(clean_table)
    _same_as_clean(out, clean_table)


def _worker_pids(parent: int) -> list[int]:
    """The pool's worker processes of ``parent`` (not multiprocessing's resource tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and "spawn_main" in cmdline:
            out.append(int(entry.name))
    return out


def test_a_worker_killed_mid_run_costs_nothing(clean_run, tmp_path: Path) -> None:
    root, clean_table = clean_run
    out = tmp_path / "m.npz"
    proc = _start_extract(root, out, "--workers", "2", "--json")
    try:
        _wait_for_part(proc, tmp_path / "m.npz.parts")
        workers = _worker_pids(proc.pid)
        assert workers
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0 and "Traceback" not in stderr, stderr
    _same_as_clean(out, clean_table)  # the images the dead worker held were run again
    from meshfer.meshtable import MeshTable

    assert MeshTable.load(out).meta["timing"]["n_workers_lost"] >= 1


def test_an_incomplete_annotated_video_is_recognised(tmp_path: Path) -> None:
    """What ``meshfer video --output`` checks after writing: OpenCV's writer reports no write error,
    so the file is read back (a disk that filled up leaves a file that does not open)."""
    from meshfer.video import open_video_writer, video_file_problem

    path = tmp_path / "out.mp4"
    writer = open_video_writer(path, 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(10):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    assert video_file_problem(path, 10) is None
    assert "11 frames" in (video_file_problem(path, 11) or "")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut off where a full disk would have stopped it
    assert video_file_problem(path, 10) is not None
    assert video_file_problem(tmp_path / "missing.mp4", 1) == "the file was not written"
