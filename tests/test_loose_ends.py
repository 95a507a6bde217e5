"""Loose ends found by trying the tools (issue 25, items 1-5): a closed standard output, names over
the system's limit, formats the decoders read (AVIF) found by every command, the messages of
evaluate, augment.py, video and a second extract on the same output (the lock), and
augment_image on images too small to distort."""

from __future__ import annotations

import errno
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

from conftest import LANDMARKER, PHOTOS, PHOTOS_TRAIN, REPO, sample_images

PHOTO = sorted((PHOTOS / "face_happy").iterdir())[0]
OTHER_PHOTO = sorted((PHOTOS / "face_sad").iterdir())[0]
STDOUT_CLOSED = "meshfer: error: cannot write to standard output (it is closed)"


def _env() -> dict[str, str]:
    return {**os.environ, "MESHFER_LANDMARKER": str(LANDMARKER)}


def meshfer(*args: object, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    streams = {} if ("stdout" in kw or "stderr" in kw) else {"capture_output": True}
    return subprocess.run([sys.executable, "-m", "meshfer", *map(str, args)], text=True, errors="backslashreplace",
                          timeout=timeout, env=_env(), cwd=REPO, **streams, **kw)


def _close_stdout() -> None:  # in the child, after the standard streams are set up: `cmd >&-`
    os.close(1)


def _data_root(tmp_path: Path, files: dict[str, list[Path]]) -> Path:
    root = tmp_path / "data"
    for label, paths in files.items():
        (root / f"face_{label}").mkdir(parents=True)
        for p in paths:
            shutil.copy2(p, root / f"face_{label}" / p.name)
    return root


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meshfer.benchmark import synthetic_clip

    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    assert synthetic_clip([PHOTO], path, frames_per_face=6, fps=15.0) == 6
    return path


# 1 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["models", "predict", "extract", "video"])
def test_closed_stdout_is_one_line_and_nonzero(command: str, tmp_path: Path, short_clip: Path) -> None:
    out = tmp_path / "meshes.npz"
    args = {
        "models": ["models"],
        "predict": ["predict", PHOTO],
        "extract": ["extract", _data_root(tmp_path, {"happy": [PHOTO]}), "-o", out, "--no-progress", "--workers", "1"],
        "video": ["video", short_clip, "--no-progress"],
    }[command]
    proc = meshfer(*args, stdout=None, stderr=subprocess.PIPE, preexec_fn=_close_stdout)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [STDOUT_CLOSED], proc.stderr
    if command == "extract":  # the work is kept: the mesh file is saved before the summary is printed
        from meshfer.meshtable import MeshTable

        table = MeshTable.load(out)
        assert len(table) == 1 and table.meta["complete"]


# 2 --------------------------------------------------------------------------------------------


def test_names_over_the_system_limit_get_their_own_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from meshfer.cli import main

    long_file = tmp_path / ("a" * 300 + ".jpg")
    long_folder = tmp_path / ("b" * 300) / "face.jpg"
    inputs = [PHOTO, long_file, long_folder, OTHER_PHOTO]
    assert main(["predict", "--json", *map(str, inputs)]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(line["image"] for line in lines) == sorted(map(str, inputs))  # each input exactly once
    by_image = {line["image"]: line for line in lines}
    for bad in (long_file, long_folder):
        assert by_image[str(bad)]["face"] is False
        assert "file name too long" in by_image[str(bad)]["reason"]
        assert "300 bytes" in by_image[str(bad)]["reason"] or "304 bytes" in by_image[str(bad)]["reason"]
    assert by_image[str(PHOTO)]["face"] is True and by_image[str(OTHER_PHOTO)]["face"] is True
    assert "Errno" not in captured.err

    # and as the data folder of extract: one line naming the path and the reason
    assert main(["extract", str(long_folder.parent), "-o", str(tmp_path / "m.npz"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"meshfer: error: {long_folder.parent}: file name too long"), err


# 3 --------------------------------------------------------------------------------------------


def _write_avif(image_path: Path, target: Path) -> bool:
    """An AVIF of a real photo, by Pillow or OpenCV, whichever can write one here."""
    try:
        from PIL import Image, features

        if features.check("avif"):
            with Image.open(image_path) as im:
                im.convert("RGB").save(target, format="AVIF")
            return True
    except Exception:
        pass
    import cv2

    try:
        ok, buf = cv2.imencode(".avif", cv2.imread(str(image_path)))
    except cv2.error:
        return False
    if ok:
        target.write_bytes(buf.tobytes())
    return bool(ok)


def test_one_list_of_readable_formats_avif_everywhere(tmp_path: Path) -> None:
    from meshfer.datasets import scan_dataset, scan_paths
    from meshfer.images import IMAGE_EXTENSIONS, is_image_file, read_image

    root = _data_root(tmp_path, {"happy": [PHOTO]})
    avif = root / "face_happy" / "photo.avif"
    if not _write_avif(OTHER_PHOTO, avif):
        pytest.skip("neither Pillow nor OpenCV can write AVIF here")
    assert read_image(avif).shape[2] == 3  # the decoders read it ...
    assert ".avif" in IMAGE_EXTENSIONS and is_image_file(avif)  # ... so the list has it
    assert avif in scan_dataset(root).paths  # extract, evaluate
    assert avif in scan_paths([root]).paths  # predict and sort on a folder
    proc = meshfer("extract", root, "-o", tmp_path / "m.npz", "--json", "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["n_images"] == 2 and summary["n_faces"] == 2 and summary["skipped"] == []


def test_every_listed_format_is_read_and_unlisted_are_not_in_the_list(tmp_path: Path) -> None:
    """The list is what the decoders open: each listed format that OpenCV or Pillow can write here is
    read back by read_image; a format no decoder here reads (JPEG XL, HEIC without a plugin) is not
    listed."""
    import cv2
    from PIL import Image

    from meshfer.images import CANDIDATE_EXTENSIONS, IMAGE_EXTENSIONS, read_image

    picture = cv2.resize(cv2.imread(str(PHOTO)), (64, 64))
    Image.init()
    checked = 0
    for ext in sorted(IMAGE_EXTENSIONS):
        path = tmp_path / f"x{ext}"
        ok, buf = False, None
        try:
            ok, buf = cv2.imencode(ext, cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY))
        except cv2.error:
            pass
        if ok:
            path.write_bytes(buf.tobytes())
        else:
            fmt = Image.registered_extensions().get(ext)
            if fmt not in Image.SAVE:
                continue
            Image.fromarray(picture[..., ::-1]).save(path, format=fmt)
        assert read_image(path).shape[:2] == (64, 64), ext
        checked += 1
    assert checked >= 10
    assert set(IMAGE_EXTENSIONS) <= set(CANDIDATE_EXTENSIONS)
    assert {".jpg", ".png", ".webp", ".tif"} <= set(IMAGE_EXTENSIONS)
    (tmp_path / "y.jxl").write_bytes(b"\xff\x0a" + b"\0" * 64)  # a JPEG XL signature, nothing decodes it here
    if ".jxl" not in IMAGE_EXTENSIONS:
        with pytest.raises(Exception):
            read_image(tmp_path / "y.jxl")


# 4 --------------------------------------------------------------------------------------------


def test_evaluate_bad_meshes_file_names_the_right_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from meshfer.cli import main

    root = _data_root(tmp_path, {label: files for label, files in sample_images(PHOTOS, 1).items()})
    bad = tmp_path / "BAD.npz"
    bad.write_bytes(b"not a mesh file, the user's own")
    assert main(["evaluate", str(root), "--meshes", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert str(bad) in err[0] and "--meshes" in err[0] and " -o" not in err[0], err
    assert bad.read_bytes() == b"not a mesh file, the user's own"


@pytest.mark.parametrize(
    "code, wanted",
    [(errno.EACCES, "not writable (permission denied)"), (errno.EROFS, "read-only"), (errno.ENOSPC, "free some space")],
)
def test_augment_read_only_folder_says_so(code: int, wanted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("albumentations")
    import meshfer.augment as augment
    from meshfer.errors import OutputError

    folder = tmp_path / "face_happy"
    folder.mkdir()
    shutil.copy2(PHOTO, folder / PHOTO.name)
    before = sorted(p.name for p in folder.iterdir())
    if code == errno.EACCES and os.geteuid() != 0:  # a real read-only folder (root writes anyway)
        folder.chmod(0o555)
    else:
        def refuse(*args, **kwargs):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(augment.tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(OutputError) as info:
            augment.augment_folder(folder, progress=False, log=lambda message: None)
    finally:
        folder.chmod(0o755)
    message = str(info.value)
    assert wanted in message, message
    if code != errno.ENOSPC:
        assert "space" not in message, message
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_video_stopped_by_a_signal_exits_128_plus_it_after_the_summary(sig: int, status: int, tmp_path: Path) -> None:
    from meshfer.benchmark import synthetic_clip

    clip = tmp_path / "long.mp4"
    total = synthetic_clip([PHOTO], clip, frames_per_face=300, fps=30.0)
    out_csv = tmp_path / "timeline.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshfer", "video", str(clip), "--csv", str(out_csv), "--json", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out_csv.exists() and len(out_csv.read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the video ended before it could be stopped"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr and "stopped after" in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])  # the summary is written all the same
    assert summary["interrupted"] is True and 2 <= summary["frames"] < total


def test_attention_box_refuses_empty_and_meaningless_boxes(short_clip: Path) -> None:
    from meshfer.temporal import AttentionBox

    for bad, why in (("5,1", "covers the whole gaze range"), ("0,0", "empty"), ("0,0.4", "empty"),
                     ("0.5,0.1,0,0", "empty"), ("0.2,0.2,0.3,0.3", "empty"), ("2,3,0,1", "outside the gaze range"),
                     ("inf,0.3", "finite"), ("nan,0.3", "finite")):
        with pytest.raises(ValueError, match=why):
            AttentionBox.parse(bad)
    assert AttentionBox.parse("0.5,0.5") == AttentionBox(-0.5, 0.5, -0.5, 0.5)
    assert AttentionBox.parse("5,0.4") == AttentionBox(-5, 5, -0.4, 0.4)  # x left free, y limited: a real box
    proc = meshfer("video", short_clip, "--attention-box", "5,1", "--no-progress")
    assert proc.returncode == 2
    assert "--attention-box" in proc.stderr and "half-widths" in proc.stderr and "not a point" in proc.stderr
    assert "Traceback" not in proc.stderr


_HOLD = """
import sys, time
from meshfer._io import output_lock
with output_lock(sys.argv[1], what="mesh file"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_extract_lock_one_run_per_output(tmp_path: Path) -> None:
    from meshfer._io import lock_path, output_lock
    from meshfer.errors import OutputError

    root = _data_root(tmp_path, {"happy": [PHOTO]})
    out = tmp_path / "meshes.npz"
    lock = lock_path(out)
    assert lock.parent == out.parent  # next to the output

    # Another run holds the lock: this one stops at once, in one line naming that process.
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = meshfer("extract", root, "-o", out, "--no-progress", "--workers", "1")
        assert proc.returncode == 2
        err = proc.stderr.strip().splitlines()
        assert err == [f"meshfer: error: {out}: another meshfer run (process {holder.pid}) is writing this mesh file "
                       f"(it holds {lock.name}); wait for it to end, or choose another file"], err
        assert not out.exists()  # it did none of the work
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, but its lock went with the process
        holder.wait()
    assert lock.exists()
    proc = meshfer("extract", root, "-o", out, "--no-progress", "--workers", "1")
    assert proc.returncode == 0, proc.stderr  # a stale lock from a dead process blocks nothing
    assert out.exists() and not lock.exists()  # released (and removed) on a normal exit

    # Released on an error too; and held against another open of the same file in this process.
    with pytest.raises(RuntimeError):
        with output_lock(out):
            assert lock.exists()
            raise RuntimeError("boom")
    assert not lock.exists()
    with output_lock(out):
        with output_lock(out):  # nested in one run: fine
            pass
        import threading

        errors: list[BaseException] = []

        def other() -> None:
            try:
                with output_lock(out):
                    pass
            except OutputError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and "another meshfer run" in str(errors[0])
    assert not lock.exists()

    # A file of that name that the user made is not a lock: never overwritten, the run refused.
    lock.write_text("my notes\n")
    proc = meshfer("extract", root, "-o", out, "--no-progress", "--workers", "1")
    assert proc.returncode == 2 and "is not a meshfer lock file" in proc.stderr
    assert lock.read_text() == "my notes\n"


def test_extract_lock_two_real_runs(tmp_path: Path) -> None:
    """Two `meshfer extract` runs on the same -o: the second says the first holds it."""
    root = tmp_path / "data" / "face_happy"
    root.mkdir(parents=True)
    for p in sorted((PHOTOS_TRAIN / "face_happy").iterdir())[:400]:
        os.symlink(p, root / p.name)
    out = tmp_path / "meshes.npz"
    first = subprocess.Popen(
        [sys.executable, "-m", "meshfer", "extract", str(root.parent), "-o", str(out), "--no-progress", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(),
    )
    try:
        from meshfer._io import lock_path

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and first.poll() is None and not lock_path(out).exists():
            time.sleep(0.02)
        if first.poll() is not None:
            pytest.skip("the first run ended before a second could start")
        second = meshfer("extract", root.parent, "-o", out, "--no-progress", "--workers", "1")
        still_running = first.poll() is None
        first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0
    if still_running:
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"meshfer: error: {out}: another meshfer run (process {first.pid}) is writing this mesh file "
            f"(it holds {lock_path(out).name}); wait for it to end, or choose another file"
        ]
    assert not lock_path(out).exists()


# 5 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 5000, 3), (5000, 1, 3), (1, 5000), (7, 300, 3)])
def test_augment_image_too_small_raises_the_projects_error(shape: tuple[int, ...]) -> None:
    pytest.importorskip("albumentations")
    from meshfer.augment import augment_image
    from meshfer.errors import ImageSizeError, MeshferError

    image = np.full(shape, 128, np.uint8)
    h, w = shape[:2]
    for seed in range(4):  # the distortions divided by zero on some draws only
        with pytest.raises(ImageSizeError, match=f"{w}x{h} pixels") as info:
            augment_image(image, seed)
        assert isinstance(info.value, MeshferError)
    out = augment_image(np.full((8, 8, 3), 128, np.uint8), 1)  # the smallest accepted size still works
    assert out.shape == (8, 8, 3)
