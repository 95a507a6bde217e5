"""Figures for the robustness goals (issue 12), printed, not timed tests.

Feeds: docs/robustness.md, "Big images" (peak memory) and what a SIGKILL loses. It prints:

1. peak memory of reading and searching one huge image, each in a fresh process, through the path
   ``meshfer extract`` takes (:func:`meshfer.extract.process_image`): a 20000x20000 and a
   30000x30000 JPEG (decoded at 1/8 size), the largest PNG that is decoded at full size, and what
   the same JPEG would cost at full size (refused before decoding);
2. what an extraction killed with SIGKILL loses: the age of its newest checkpoint at the kill, the
   images the re-run had to do again, and whether the re-run's result equals a clean run's.

Usage (from the repository root, with the shared data beside it or MESHFER_SHARED set)::

    python scripts/robustness_figures.py [--images 600] [--kills 3] [--workers 2] [--skip-kill]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from badinputs import flat_jpeg  # noqa: E402

SHARED = Path(os.environ.get("MESHFER_SHARED", REPO.parent / "shared")).resolve()
LANDMARKER = Path(os.environ.get("MESHFER_LANDMARKER", SHARED / "models" / "face_landmarker.task"))
FER_VAL = SHARED / "datasets" / "fer2013" / "validation"
PHOTOS = SHARED / "datasets" / "muxspace-dev"

_MEASURE = r"""
import json, sys, time
from meshfer.extract import process_image
from meshfer.landmarks import FaceLandmarker, LandmarkerOptions

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB

path, warm = sys.argv[1], sys.argv[2]
with FaceLandmarker(LandmarkerOptions(model_path=sys.argv[3])) as lm:
    process_image(lm, warm)  # graphs built, fallback landmarker too
    process_image(lm, sys.argv[4])  # a faceless image: every attempt made once
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the present size
    except OSError:
        pass
    before = status("VmHWM")
    t = time.perf_counter()
    row = process_image(lm, path)
    seconds = time.perf_counter() - t
    after = status("VmHWM")
print(json.dumps({"before_kb": before, "after_kb": after, "seconds": seconds, "status": row["status"],
                  "error": row.get("error", ""), "size": row.get("image_size")}))
"""


def memory(work: Path) -> None:
    import cv2
    import numpy as np

    warm = sorted((PHOTOS / "face_happy").iterdir())[0]
    cases = {}
    (work / "jpeg_20000.jpg").write_bytes(flat_jpeg(20000, 20000))
    cases["20000x20000 JPEG (flat grey, 1.6 MB)"] = work / "jpeg_20000.jpg"
    (work / "jpeg_30000.jpg").write_bytes(flat_jpeg(30000, 30000))
    cases["30000x30000 JPEG (flat grey, 3.5 MB)"] = work / "jpeg_30000.jpg"
    photo = cv2.imread(str(warm))
    big = cv2.resize(photo, (6000, 5000), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big.astype(np.int16) + np.random.default_rng(0).integers(-6, 7, big.shape, dtype=np.int16), 0, 255)
    cv2.imwrite(str(work / "png_6000x5000.png"), big.astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    cases["6000x5000 PNG (30 Mpx, decoded at full size)"] = work / "png_6000x5000.png"
    flat = np.full((6800, 6800, 3), 128, np.uint8)
    cv2.imwrite(str(work / "png_6800x6800.png"), flat)
    cases["6800x6800 PNG (46 Mpx, near the decode limit)"] = work / "png_6800x6800.png"
    del flat
    cv2.imwrite(str(work / "faceless.png"), np.full((1920, 1920, 3), 128, np.uint8))
    big = cv2.resize(photo, (6000, 4000), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(work / "photo_6000x4000.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    cases["6000x4000 JPEG photo (a face)"] = work / "photo_6000x4000.jpg"
    del big, photo
    print("1. Peak memory of one image (fresh process; extraction's path: read at reduced size, 4 attempts)")
    print(f"   {'image':<46} {'file MB':>8} {'result':<24} {'peak +MB':>9} {'peak MB':>8} {'s':>6}")
    for label, path in cases.items():
        out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(warm), str(LANDMARKER),
                              str(work / "faceless.png")],
                             capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            print(f"   {label:<46} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        result = r["status"] if r["status"] != "unreadable" else r["error"][:24]
        print(f"   {label:<46} {path.stat().st_size / 1e6:>8.1f} {result:<24} "
              f"{(r['after_kb'] - r['before_kb']) / 1024:>9.0f} {r['after_kb'] / 1024:>8.0f} {r['seconds']:>6.2f}")
    from meshfer.errors import ImageReadError
    from meshfer.images import read_image

    try:
        read_image(work / "jpeg_20000.jpg")
        print("   the 20000x20000 JPEG at full size: decoded (unexpected)")
    except ImageReadError as exc:
        print(f"   the same JPEG at full size (read_image without max_side): {exc.reason}")
    print("   (peak +MB: the process's peak resident memory (VmHWM) above its size before the image, after a")
    print("    1920x1920 faceless image went through every attempt; peak MB: the process's peak)")


def _fer_root(root: Path, n: int) -> int:
    per_class = {}
    for folder in sorted(FER_VAL.glob("face_*")):
        per_class[folder.name] = sorted(folder.iterdir())
    total = 0
    k = 0
    while total < n:
        for name, files in per_class.items():
            if k < len(files) and total < n:
                (root / name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(files[k], root / name / files[k].name)
                total += 1
        k += 1
    return total


def kills(work: Path, n_images: int, n_kills: int, workers: int) -> None:
    import numpy as np

    from meshfer.extract import ExtractStats, extract
    from meshfer.meshtable import MeshTable

    root = work / "data"
    _fer_root(root, n_images)
    stats = ExtractStats()
    clean = extract(root, None, workers=workers, progress=False, stats=stats)
    rate = len(clean) / stats.wall_s
    print(f"\n2. SIGKILL during 'meshfer extract' ({len(clean)} FER-2013 images, {workers} workers, "
          f"clean run {stats.wall_s:.1f} s, {rate:.0f} images/s)")
    print(f"   {'kill at s':>9} {'saved rows':>10} {'newest checkpoint age s':>24} {'re-done':>8} {'re-run = clean':>15}")
    env = {**os.environ, "MESHFER_LANDMARKER": str(LANDMARKER)}
    for k in range(n_kills):
        out = work / f"kill{k}.npz"
        parts = out.with_name(out.name + ".parts")
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "meshfer", "extract", str(root), "-o", str(out), "--no-progress",
                                 "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd=REPO, start_new_session=True)
        while not (parts.is_dir() and any(parts.glob("part-*.npz"))) and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(0.7 * (k + 1))  # somewhere between checkpoints
        if proc.poll() is not None:
            print("   the run ended before the kill: use more --images")
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.time()
        proc.wait()
        at = time.monotonic() - start
        files = sorted(parts.glob("part-*.npz"))
        saved = sum(len(MeshTable.load(p)) for p in files)
        age = killed - max(p.stat().st_mtime for p in files)
        rerun = ExtractStats()
        table = extract(root, out, workers=workers, progress=False, stats=rerun)
        same = (np.array_equal(table.paths, clean.paths) and np.array_equal(table.status, clean.status)
                and np.allclose(table.landmarks, clean.landmarks, atol=1e-4, equal_nan=True)
                and len(set(table.paths)) == len(table))
        print(f"   {at:>9.1f} {saved:>10} {age:>24.2f} {rerun.n_processed:>8} {str(same):>15}")
    print("   (the work lost is at most the newest checkpoint's age at the kill, plus the chunks then in flight)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-kill", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("MESHFER_LANDMARKER", str(LANDMARKER))
    with tempfile.TemporaryDirectory(prefix="meshfer-robustness-") as tmp:
        work = Path(tmp)
        if not args.skip_memory:
            memory(work)
        if not args.skip_kill:
            kills(work, args.images, args.kills, args.workers)
    print(f"\n(this process: peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
