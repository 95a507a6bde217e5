"""Speed and memory benchmark: ``python -m meshfer.benchmark --data DIR [--photos DIR] [--video FILE]``.

Prints one table per section (``--sections`` picks some):

- ``stages``: median and p95 time per image of each step of ``meshfer predict`` on images of
  ``--data`` (and of ``--photos``): decode, landmarker (with its fallback attempts; MediaPipe's own inference time
  beside it), each feature set, each model, and all models with their features together.
- ``extract``: images per second of ``meshfer extract`` on ``--data`` with 1..``--workers`` worker
  processes, the speed-up over one worker, and the per-image cost over MediaPipe's own inference
  time (inside the workers, and over the whole wall-clock run).
- ``startup``: ``meshfer predict IMAGE --json`` as a new process, start to printed result, and its
  peak resident memory (several runs).
- ``loads``: import and load times of MediaPipe, ONNX Runtime, the landmarker and each model, in a
  fresh process.
- ``video``: frames per second on ONE core (a child process pinned with ``sched_setaffinity``) on
  a clip (``--video``, or a 640x480 clip made from the faces in ``--photos``): landmarker only
  (VIDEO mode, frames decoded beforehand), end to end (decode, colour conversion, landmarker,
  features, models, smoothing, blink counting) and end to end with the overlay drawn; the time
  per frame of each step and how much the models add to the landmarker's own time.

Models: the installed defaults, or ``--model/--eyes/--gaze/--mouth NAME_OR_CARD``. Timings depend
on what else the machine runs: the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["synthetic_clip", "pick_face_photos", "main", "SECTIONS"]

SECTIONS = ("stages", "extract", "startup", "loads", "video")
_TASK_ARGS = (("expression", "model"), ("eyes", "eyes"), ("gaze", "gaze"), ("mouth", "mouth"))


# --------------------------------------------------------------------------------------------------
# Helpers


def _ms(values: Sequence[float]) -> tuple[float, float]:
    """Median and 95th percentile of seconds, in milliseconds."""
    a = np.asarray(values, dtype=np.float64) * 1000.0
    return (float(np.median(a)), float(np.percentile(a, 95))) if len(a) else (float("nan"), float("nan"))


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "-" if v != v else (f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(header)]
    lines = [
        title,
        "  "
        + "  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w) for i, (h, w) in enumerate(zip(header, widths))),
    ]
    for r in cells:
        lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def _model_choices(args: argparse.Namespace) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, attr in _TASK_ARGS:
        value = getattr(args, attr)
        out[key] = None if value is not None and value.lower() in ("none", "off") else value
    return out


def _predictor(choices: dict[str, str | None]) -> Any:
    from .predict import Predictor

    return Predictor(**choices)


def _sample_images(data: Path, n: int, seed: int = 0) -> list[Path]:
    """About ``n`` images of a data folder, spread over its classes (any folder of images works)."""
    from .datasets import scan_dataset, scan_paths

    if any(c.is_dir() and c.name.startswith("face_") for c in data.iterdir()):
        dataset = scan_dataset(data)
        per_class = max(1, -(-n // max(1, len(dataset.labels))))
        paths = dataset.limit(per_class, seed=seed).paths
    else:
        paths = scan_paths([data]).paths
    rng = np.random.default_rng(seed)
    paths = list(paths)
    rng.shuffle(paths)
    return paths[:n]


def synthetic_clip(
    images: Sequence[str | Path],
    path: str | Path,
    frames_per_face: int = 60,
    blank_frames: int = 0,
    fps: float = 30.0,
    size: tuple[int, int] = (640, 480),
    background: int = 90,
) -> int:
    """Write an MPEG-4 clip (``mp4v``) of ``size`` in which each image is shown for
    ``frames_per_face`` frames, drifting gently (the landmarker has to track it), followed by
    ``blank_frames`` frames without a face. Images larger than the frame are shrunk to fit.
    Returns the number of frames written."""
    import cv2

    from .images import read_image
    from .video import open_video_writer

    w, h = size
    writer = open_video_writer(path, fps, size)
    blank = np.full((h, w, 3), background, dtype=np.uint8)
    n = 0
    try:
        for image in images:
            img = cv2.cvtColor(read_image(image), cv2.COLOR_RGB2BGR)
            scale = min((h - 40) / img.shape[0], (w - 40) / img.shape[1], 1.0)
            if scale < 1.0:
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ih, iw = img.shape[:2]
            for i in range(frames_per_face):
                frame = blank.copy()
                phase = 2.0 * np.pi * i / max(frames_per_face, 1)
                x0 = (w - iw) // 2 + int(15 * np.sin(phase))
                y0 = (h - ih) // 2 + int(10 * np.cos(phase))
                frame[y0 : y0 + ih, x0 : x0 + iw] = img
                writer.write(frame)
                n += 1
            for _ in range(blank_frames):
                writer.write(blank)
                n += 1
    finally:
        writer.release()
    return n


def pick_face_photos(photos: Path, n: int, min_side: int = 200, landmarker: str | Path | None = None) -> list[Path]:
    """``n`` images of at least ``min_side`` pixels in which MediaPipe finds a face, one per class
    in turn (for a clip of real faces)."""
    import cv2

    from .datasets import scan_dataset, scan_paths
    from .landmarks import FaceLandmarker, LandmarkerOptions

    if any(c.is_dir() and c.name.startswith("face_") for c in photos.iterdir()):
        dataset = scan_dataset(photos)
        by_label: dict[str, list[Path]] = {}
        for r in dataset.records:
            by_label.setdefault(r.label, []).append(r.path)
        queues = [sorted(v) for _, v in sorted(by_label.items())]
        order = [p for group in zip(*queues) for p in group] if queues else []
    else:
        order = sorted(scan_paths([photos]).paths)
    chosen: list[Path] = []
    with FaceLandmarker(LandmarkerOptions(model_path=landmarker, attempts=LandmarkerOptions().attempts[:1])) as lm:
        for p in order:
            img = cv2.imread(str(p))
            if img is None or min(img.shape[:2]) < min_side:
                continue
            if lm.detect(p):
                chosen.append(p)
            if len(chosen) == n:
                break
    return chosen


def _child(section: str, params: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; returns its JSON result."""
    cmd = [sys.executable, "-m", "meshfer.benchmark", "--child", section, json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"benchmark child '{section}' failed: " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# Sections


def bench_stages(data: Path, n_images: int, choices: dict[str, str | None], landmarker: str | None) -> dict[str, Any]:
    """Per-image time of each step of the IMAGE-mode prediction path."""
    from . import features
    from .images import read_image
    from .landmarks import FaceLandmarker, LandmarkerOptions

    paths = _sample_images(data, n_images)
    predictor = _predictor(choices)
    models = predictor.models
    sets = sorted({m.card.feature_set for m in models.values()})
    times: dict[str, list[float]] = {k: [] for k in ("decode", "landmarker", "inference", "crop", "predict", "total")}
    for s in sets:
        times[f"features: {s}"] = []
    for task, m in models.items():
        times[f"model: {task} ({m.card.name})"] = []
    faces = 0
    per_face: list[tuple[float, float, float]] = []  # MediaPipe inference, crop, features + models
    crop_spec = predictor.crop_spec
    with FaceLandmarker(LandmarkerOptions(model_path=landmarker, crop=crop_spec)) as lm:
        for warm in paths[:3]:
            lm.detect(warm)
        for path in paths:
            t0 = time.perf_counter()
            image = read_image(path)
            t1 = time.perf_counter()
            before, before_crop = lm.inference_seconds, lm.crop_seconds
            found = lm.detect(image)
            t2 = time.perf_counter()
            times["decode"].append(t1 - t0)
            times["landmarker"].append(t2 - t1)
            times["inference"].append(lm.inference_seconds - before)
            if found and crop_spec is not None:
                times["crop"].append(lm.crop_seconds - before_crop)
            if not found:
                times["total"].append(t2 - t0)
                continue
            faces += 1
            mesh = found[0]
            args = (mesh.landmarks[None], mesh.blendshapes[None], np.array([mesh.image_size], dtype=np.float32))
            crops = None if mesh.crop is None else mesh.crop[None]
            t3 = time.perf_counter()
            predictor.predict_batch(*args, crops)
            t4 = time.perf_counter()
            times["predict"].append(t4 - t3)
            per_face.append((times["inference"][-1], times["crop"][-1] if crop_spec is not None else 0.0, t4 - t3))
            times["total"].append(t4 - t0)
            feats = {}
            for s in sets:
                t = time.perf_counter()
                feats[s] = features.compute(s, *args)
                times[f"features: {s}"].append(time.perf_counter() - t)
            for task, m in models.items():
                x = feats[m.card.feature_set]
                t = time.perf_counter()
                _run_model(m, x, crops, args)
                times[f"model: {task} ({m.card.name})"].append(time.perf_counter() - t)
    rows = {
        "decode": "decode (read_image)",
        "landmarker": "landmarker (detect, with fallback)",
        "inference": "  of which MediaPipe inference",
        "crop": "  of which mesh-aligned face crop",
    }
    out_rows = [[rows.get(k, k), *_ms(v)] for k, v in times.items() if k in rows]
    out_rows += [[k, *_ms(v)] for k, v in times.items() if k.startswith(("features:", "model:"))]
    out_rows.append(["features + models (predict_batch)", *_ms(times["predict"])])
    out_rows.append(["total per image", *_ms(times["total"])])
    return {
        "images": len(paths),
        "faces": faces,
        "data": str(data),
        "rows": out_rows,
        "models": {t: m.card.name for t, m in models.items()},
        # the measure: crop + features + all models over MediaPipe's inference, faces only
        "cost_over_inference": float(np.sum([c + m for _, c, m in per_face]) / np.sum([i for i, _, _ in per_face]))
        if per_face else None,
    }


def _run_model(model: Any, x: np.ndarray, crops: np.ndarray | None, mesh: tuple | None = None) -> Any:
    """One model on one face's features (and crop, and the mirrored features when it averages the
    face with its mirror image: ``mesh`` is (landmarks, blendshapes, sizes))."""
    if getattr(model, "needs_crops", False):
        mirrored = model.mirror_features(*mesh) if model.needs_mirror and mesh is not None else None
        return model.predict_proba(x, crops, mirrored)
    return model.predict_proba(x) if model.card.is_classifier else model.predict(x)


def bench_extract(data: Path, max_workers: int, limit: int | None, landmarker: str | None) -> dict[str, Any]:
    """Throughput of :func:`meshfer.extract.extract` (no cache) with 1..max_workers workers."""
    from .datasets import scan_dataset, scan_paths
    from .extract import ExtractStats, extract
    from .landmarks import LandmarkerOptions

    if any(c.is_dir() and c.name.startswith("face_") for c in data.iterdir()):
        dataset = scan_dataset(data)
    else:
        dataset = scan_paths([data])
    paths = list(dataset.paths)
    if limit is not None:
        paths = _sample_images(data, limit)
    rows = []
    base = None
    for k in range(1, max_workers + 1):
        stats = ExtractStats()
        table = extract(
            paths, None, workers=k, options=LandmarkerOptions(model_path=landmarker), progress=False, stats=stats
        )
        ips = len(paths) / stats.wall_s
        base = base or ips
        inner = (stats.worker_s - stats.inference_s) / stats.inference_s if stats.inference_s else float("nan")
        outer = (stats.wall_s * k - stats.inference_s) / stats.inference_s if stats.inference_s else float("nan")
        coverage = float(np.mean(table.status == "ok")) if len(table) else float("nan")
        rows.append([k, len(paths), stats.wall_s, ips, ips / base, 100 * inner, 100 * outer, 100 * coverage])
    return {"data": str(data), "rows": rows}


# Runs the command given in argv, timing it and reporting its peak resident memory. It is a
# separate small process because Linux carries a process's RSS high-water mark over to the
# programs it starts: measured from the benchmark itself, the child would inherit its size.
_LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = proc.stdout.readline()
t1 = time.perf_counter()
rest = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
t2 = time.perf_counter()
print(json.dumps({"to_result_s": t1 - t0, "to_exit_s": t2 - t0, "maxrss_kb": usage.ru_maxrss,
                  "returncode": os.waitstatus_to_exitcode(status), "output": line + rest}))
"""


def bench_startup(image: Path, runs: int, choices: dict[str, str | None], landmarker: str | None) -> dict[str, Any]:
    """``meshfer predict IMAGE --json`` in new processes: wall time from process start to the
    printed line and to exit, and peak resident memory (the kernel's high-water mark)."""
    cmd = [sys.executable, "-m", "meshfer", "predict", str(image), "--json"]
    for key, attr in _TASK_ARGS:
        value = choices[key]
        if value != "default":
            cmd += [f"--{attr}", "none" if value is None else value]
    if landmarker:
        cmd += ["--landmarker", landmarker]
    # As after an install (pip compiles the byte code): a first, uncounted run writes the byte-code
    # caches that PYTHONDONTWRITEBYTECODE (common in containers) would otherwise make every run redo.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    first, done, rss, last = [], [], [], ""
    for i in range(runs + 1):
        launcher = subprocess.run([sys.executable, "-c", _LAUNCHER, *cmd], capture_output=True, text=True, check=True,
                                  env=env)
        if i == 0:
            continue
        r = json.loads(launcher.stdout.strip().splitlines()[-1])
        if r["returncode"] != 0 or not r["output"].strip():
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {r['returncode']})")
        first.append(r["to_result_s"])
        done.append(r["to_exit_s"])
        rss.append(r["maxrss_kb"] / 1024.0)  # KiB on Linux
        last = r["output"].strip()
    return {
        "image": str(image),
        "runs": runs,
        "to_result_s": [float(np.median(first)), float(np.min(first)), float(np.max(first))],
        "to_exit_s": [float(np.median(done)), float(np.min(done)), float(np.max(done))],
        "peak_rss_mb": [float(np.median(rss)), float(np.max(rss))],
        "output": json.loads(last.splitlines()[0]) if last else None,
    }


def _child_loads(params: dict[str, Any]) -> dict[str, Any]:
    from .landmarks import FaceLandmarker, LandmarkerOptions, RunningMode, import_mediapipe
    from .models import default_card, get_card, load_model

    out: dict[str, float] = {}
    t = time.perf_counter()
    import_mediapipe()
    out["import mediapipe"] = time.perf_counter() - t
    t = time.perf_counter()
    import onnxruntime  # noqa: F401

    out["import onnxruntime"] = time.perf_counter() - t
    for mode in (RunningMode.IMAGE, RunningMode.VIDEO):
        t = time.perf_counter()
        FaceLandmarker(LandmarkerOptions(model_path=params["landmarker"], running_mode=mode)).close()
        out[f"landmarker ({mode.value} mode)"] = time.perf_counter() - t
    for (task, choice), key in zip(params["choices"].items(), ("expression", "eye", "gaze", "mouth")):
        if choice is None:
            continue
        card = default_card(key) if choice == "default" else get_card(choice, key)
        if card is None:
            continue
        t = time.perf_counter()
        load_model(card)
        out[f"model: {task} ({card.name}, {card.model_path.stat().st_size / 1e6:.2f} MB)"] = time.perf_counter() - t
    return out


def _child_video(params: dict[str, Any]) -> dict[str, Any]:
    core = params.get("core")
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(core)})
    import cv2

    from .landmarks import FaceLandmarker, LandmarkerOptions, RunningMode
    from .overlay import draw_overlay
    from .temporal import TemporalConfig
    from .video import VideoAnalyzer, VideoSource

    clip, max_frames = params["clip"], params["frames"]
    options = LandmarkerOptions(model_path=params["landmarker"])
    predictor = _predictor(params["choices"])
    out: dict[str, Any] = {"cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}

    # Landmarker only: frames decoded and converted beforehand.
    frames = []
    with VideoSource(clip) as src:
        out["size"] = None
        for frame, t in src:
            frames.append((cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), t))
            if len(frames) >= max_frames:
                break
    out["size"] = [frames[0][0].shape[1], frames[0][0].shape[0]] if frames else None
    per = []
    with FaceLandmarker(dataclasses.replace(options, running_mode=RunningMode.VIDEO)) as lm:
        t0 = time.perf_counter()
        for rgb, t in frames:
            a = time.perf_counter()
            lm.detect_for_video(rgb, int(t * 1000))
            per.append(time.perf_counter() - a)
        total = time.perf_counter() - t0
        out["landmarker_only"] = {
            "frames": len(frames),
            "fps": len(frames) / total,
            "ms": _ms(per),
            "mediapipe_ms_mean": 1000 * lm.inference_seconds / max(1, len(frames)),
        }
    # The same, decoding the clip as it goes (what a MediaPipe-only video loop also pays).
    with VideoSource(clip) as src, FaceLandmarker(dataclasses.replace(options, running_mode=RunningMode.VIDEO)) as lm:
        n = 0
        t0 = time.perf_counter()
        for frame, t in src:
            lm.detect_for_video(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), int(t * 1000))
            n += 1
            if n >= max_frames:
                break
        out["landmarker_decoding"] = {"frames": n, "fps": n / (time.perf_counter() - t0)}

    # Features and model inference timed apart, one frame at a time between landmarker calls (so
    # with the caches as cold as in the real loop).
    from . import features

    models = predictor.models
    split: dict[str, list[float]] = {"landmarker": [], "crop": [], "features": [], "inference": []}
    split.update({f"model: {task} ({m.card.name})": [] for task, m in models.items()})
    crop_spec = predictor.crop_spec
    with FaceLandmarker(dataclasses.replace(options, running_mode=RunningMode.VIDEO, crop=crop_spec)) as lm:
        for rgb, t in frames:
            a = time.perf_counter()
            before_crop = lm.crop_seconds
            faces = lm.detect_for_video(rgb, int(t * 1000))
            if not faces or not models:
                continue
            split["landmarker"].append(time.perf_counter() - a)
            if crop_spec is not None:
                split["crop"].append(lm.crop_seconds - before_crop)
            mesh = faces[0]
            args = (mesh.landmarks[None], mesh.blendshapes[None], np.array([mesh.image_size], dtype=np.float32))
            crops = None if mesh.crop is None else mesh.crop[None]
            a = time.perf_counter()
            feats = features.compute_many([m.card.feature_set for m in models.values()], *args)
            b = time.perf_counter()
            for task, m in models.items():
                c = time.perf_counter()
                _run_model(m, feats[m.card.feature_set], crops, args)
                split[f"model: {task} ({m.card.name})"].append(time.perf_counter() - c)
                if crops is not None and getattr(m, "needs_crops", False):
                    key = f"crop + model: {task} ({m.card.name})"
                    split.setdefault(key, []).append(split["crop"][-1] + split[f"model: {task} ({m.card.name})"][-1])
            split["features"].append(b - a)
            split["inference"].append(time.perf_counter() - b)
            if predictor.fused is not None and (crops is not None or not predictor.fused.needs_crops):
                c = time.perf_counter()
                predictor.fused.run(*args, crops)
                split.setdefault("fused", []).append(time.perf_counter() - c)
    out["split_ms"] = {k: _ms(v) for k, v in split.items() if v}
    del frames

    def run(draw: bool) -> dict[str, Any]:
        decode, landm, landm_face, models, overlay, crop_face = [], [], [], [], [], []
        faces = 0
        with VideoSource(clip) as src, VideoAnalyzer(predictor, options, TemporalConfig()) as an:
            labels = an.expression_labels
            t0 = time.perf_counter()
            n = 0
            while n < max_frames:
                a = time.perf_counter()
                item = src.read()
                if item is None:
                    break
                b = time.perf_counter()
                r = an.process(*item)
                n += 1
                decode.append(b - a)
                landm.append(r.landmarker_s)
                if r.record.face:
                    faces += 1
                    models.append(r.models_s)
                    landm_face.append(r.landmarker_s)
                    crop_face.append(r.crop_s)
                if draw:
                    c = time.perf_counter()
                    draw_overlay(item[0], r, labels, 30.0, "box")
                    overlay.append(time.perf_counter() - c)
            total = time.perf_counter() - t0
        res = {
            "frames": n,
            "faces": faces,
            "fps": n / total,
            "decode_ms": _ms(decode),
            "landmarker_ms": _ms(landm),
            "models_ms": _ms(models),
            "models_over_landmarker": float(np.sum(models) / np.sum(landm_face)) if landm_face else None,
            # the measure: crop + features + models + temporal over the landmarker without the crop
            "cost_over_landmarker": float((np.sum(crop_face) + np.sum(models)) / (np.sum(landm_face) - np.sum(crop_face)))
            if landm_face else None,
        }
        if draw:
            res["overlay_ms"] = _ms(overlay)
        return res

    out["end_to_end"] = run(False)
    out["with_overlay"] = run(True)
    out["models"] = {t: m.card.name for t, m in predictor.models.items()}
    return out


def bench_video(
    clip: Path, frames: int, core: int | None, choices: dict[str, str | None], landmarker: str | None
) -> dict[str, Any]:
    return _child(
        "video", {"clip": str(clip), "frames": frames, "core": core, "choices": choices, "landmarker": landmarker}
    )


# --------------------------------------------------------------------------------------------------


def _print_results(results: dict[str, Any], echo: Callable[[str], None]) -> None:
    for r in results.get("stages", []):
        echo(
            _table(
                f"Per-image time, IMAGE mode ({r['images']} images of {r['data']}, {r['faces']} faces)",
                ["step", "median ms", "p95 ms"],
                r["rows"],
            )
        )
        if r.get("cost_over_inference") is not None:
            echo(f"  crop + features + models = {100 * r['cost_over_inference']:.1f}% of MediaPipe's inference "
                 f"(images with a face)")
        echo("")
    if "extract" in results:
        r = results["extract"]
        echo(
            _table(
                f"Extraction throughput (meshfer extract, no cache, {r['data']})",
                [
                    "workers",
                    "images",
                    "wall s",
                    "images/s",
                    "speed-up",
                    "cost over MP inference %",
                    "incl. start-up %",
                    "faces %",
                ],
                r["rows"],
            )
        )
        echo("")
    if "startup" in results:
        r = results["startup"]
        rows = [
            ["to printed result (s)", *r["to_result_s"]],
            ["to process exit (s)", *r["to_exit_s"]],
            ["peak resident memory (MB)", r["peak_rss_mb"][0], float("nan"), r["peak_rss_mb"][1]],
        ]
        echo(
            _table(
                f"meshfer predict, one image, cold process ({r['runs']} runs after one that caches byte code; "
                f"{Path(r['image']).name})",
                ["", "median", "min", "max"],
                rows,
            )
        )
        echo("")
    if "loads" in results:
        rows = [[k, 1000 * v] for k, v in results["loads"].items()]
        echo(_table("Import and load times (fresh process)", ["", "ms"], rows))
        echo("")
    if "video" in results:
        r = results["video"]
        size = "x".join(map(str, r.get("size") or ["?"]))
        lo, e2e, ov = r["landmarker_only"], r["end_to_end"], r["with_overlay"]
        rows = [
            ["landmarker only (VIDEO mode)", lo["frames"], lo["fps"], *lo["ms"]],
            *([["landmarker only, decoding the clip", r["landmarker_decoding"]["frames"], r["landmarker_decoding"]["fps"],
                float("nan"), float("nan")]] if "landmarker_decoding" in r else []),
            ["end to end (decode .. models)", e2e["frames"], e2e["fps"], float("nan"), float("nan")],
            ["  decode", "", "", *e2e["decode_ms"]],
            ["  landmarker", "", "", *e2e["landmarker_ms"]],
            ["  features + models + temporal", "", "", *e2e["models_ms"]],
            *[
                [
                    f"    {_SPLIT_NAMES.get(k, k)}",
                    "",
                    "",
                    *v,
                ]
                for k, v in r.get("split_ms", {}).items()
                if k != "landmarker" and not k.startswith("crop +")
            ],
            ["end to end + overlay", ov["frames"], ov["fps"], float("nan"), float("nan")],
            ["  overlay drawing", "", "", *ov.get("overlay_ms", (float("nan"),) * 2)],
        ]
        echo(
            _table(
                f"Video on one core (cpu {r.get('cpus')}), {size} clip {Path(r['clip']).name}, faces in "
                f"{e2e['faces']}/{e2e['frames']} frames",
                ["", "frames", "fps", "median ms", "p95 ms"],
                rows,
            )
        )
        ratio = e2e.get("models_over_landmarker")
        if ratio is not None:
            echo(f"  features + models + temporal add {100 * ratio:.1f}% to the landmarker's time with its crop "
                 f"(frames with a face)")
        cost = e2e.get("cost_over_landmarker")
        if cost is not None:
            echo(f"  crop + features + models + temporal = {100 * cost:.1f}% of the landmarker's own time "
                 f"(frames with a face)")
        echo(f"  end to end {e2e['fps']:.1f} fps = {e2e['fps'] / lo['fps']:.2f}x the landmarker only"
             + (f", {e2e['fps'] / r['landmarker_decoding']['fps']:.2f}x the landmarker decoding the clip"
                if "landmarker_decoding" in r else ""))
        split = r.get("split_ms", {})
        if "inference" in split and "landmarker" in split:
            lm_ms = split["landmarker"][0]
            echo(
                f"  separate pass, medians: landmarker {lm_ms:.2f} ms; features {split['features'][0]:.3f} ms "
                f"({100 * split['features'][0] / lm_ms:.1f}%), model inference {split['inference'][0]:.3f} ms "
                f"({100 * split['inference'][0] / lm_ms:.1f}%)"
            )
        if "fused" in split and "landmarker" in split:
            echo(f"  fused graph (features + all models in one session): median {split['fused'][0]:.3f} ms = "
                 f"{100 * split['fused'][0] / split['landmarker'][0]:.1f}% of the landmarker's "
                 f"(separately {split['features'][0] + split['inference'][0]:.3f} ms)")
        for k, v in split.items():
            if k.startswith("crop +"):
                echo(f"  {k}: median {v[0]:.3f} ms, p95 {v[1]:.3f} ms per face on one core")
        echo(f"  models: {r.get('models') or 'none installed'}")
        echo("")


_SPLIT_NAMES = {"features": "all feature sets", "inference": "all models", "crop": "face crop (in the landmarker)",
                "fused": "fused graph (features + models)"}


def _environment() -> dict[str, Any]:
    from importlib import metadata

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("mediapipe", "onnxruntime", "numpy", "opencv-contrib-python", "opencv-python-headless"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meshfer.benchmark",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    p.add_argument(
        "--data",
        type=Path,
        help="face_<label> folders (or a folder of images) for the image sections, " "e.g. FER-2013 validation",
    )
    p.add_argument(
        "--photos", type=Path, help="photos to build the video clip from and for the start-up image (default: --data)"
    )
    p.add_argument(
        "--video", type=Path, help="video clip for the video section (default: a 640x480 clip made from --photos)"
    )
    p.add_argument("--image", type=Path, help="image for the start-up section (default: one of --photos)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--images", type=int, default=200, help="images timed in the stages section (default 200)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="largest number of extraction workers")
    p.add_argument("--extract-limit", type=int, help="images extracted per worker count (default: all of --data)")
    p.add_argument("--frames", type=int, default=300, help="video frames timed (default 300)")
    p.add_argument("--core", type=int, help="CPU core for the video section (default: the last one allowed)")
    p.add_argument("--runs", type=int, default=5, help="cold-start runs (default 5)")
    p.add_argument("--landmarker", help="face_landmarker.task (default: $MESHFER_LANDMARKER, the user cache)")
    p.add_argument("--model", default="default", help="expression model name or card (default: the installed default)")
    p.add_argument("--eyes", default="default", help="eye model, or 'none'")
    p.add_argument("--gaze", default="default", help="gaze model, or 'none'")
    p.add_argument("--mouth", default="default", help="mouth model, or 'none'")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        section, params = args.child[0], json.loads(args.child[1])
        result = {"loads": _child_loads, "video": _child_video}[section](params)
        print(json.dumps(result))
        return 0

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(
            f"benchmark: unknown section(s) {', '.join(sorted(unknown))}; valid: {', '.join(SECTIONS)}", file=sys.stderr
        )
        return 2
    need_data = {"stages", "extract"} & set(sections)
    if need_data and (args.data is None or not args.data.is_dir()):
        print(
            f"benchmark: sections {', '.join(sorted(need_data))} need --data DIR (a folder of images)", file=sys.stderr
        )
        return 2
    photos = args.photos or args.data
    if ("video" in sections and args.video is None or "startup" in sections and args.image is None) and (
        photos is None or not photos.is_dir()
    ):
        print("benchmark: the video and startup sections need --video/--image or --photos DIR", file=sys.stderr)
        return 2

    from .assets import resolve_landmarker

    landmarker = str(resolve_landmarker(args.landmarker))
    choices = _model_choices(args)
    env = _environment()
    results: dict[str, Any] = {"environment": env}
    echo: Callable[[str], None] = lambda s: print(s, flush=True)  # noqa: E731
    echo(
        f"meshfer benchmark: {env['cpu']}, {env['cores']} cores, Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    )
    if env["load_average"]:
        echo(
            f"load average at start: {' '.join(f'{v:.2f}' for v in env['load_average'])} "
            "(other work on the machine slows every figure)"
        )
    echo("")

    clip_dir = tempfile.TemporaryDirectory(prefix="meshfer-bench-")
    try:
        for section in sections:
            if section == "stages":
                folders = [args.data] + (
                    [photos] if photos is not None and photos.resolve() != args.data.resolve() else []
                )
                results["stages"] = [bench_stages(folder, args.images, choices, landmarker) for folder in folders]
            elif section == "extract":
                results["extract"] = bench_extract(args.data, args.workers, args.extract_limit, landmarker)
            elif section == "startup":
                image = args.image or pick_face_photos(photos, 1, landmarker=landmarker)[0]
                results["startup"] = bench_startup(image, args.runs, choices, landmarker)
            elif section == "loads":
                results["loads"] = _child("loads", {"landmarker": landmarker, "choices": choices})
            elif section == "video":
                clip = args.video
                if clip is None:
                    clip = Path(clip_dir.name) / "faces-640x480.mp4"
                    n_faces = max(1, -(-args.frames // 60))
                    synthetic_clip(pick_face_photos(photos, n_faces, landmarker=landmarker), clip, frames_per_face=60)
                cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
                core = args.core if args.core is not None else cores[-1]
                results["video"] = {"clip": str(clip), **bench_video(clip, args.frames, core, choices, landmarker)}
            _print_results({section: results[section]}, echo)
    finally:
        clip_dir.cleanup()
    if env["load_average"] and hasattr(os, "getloadavg"):
        results["load_average_end"] = list(os.getloadavg())
        echo(f"load average at end: {' '.join(f'{v:.2f}' for v in results['load_average_end'])}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
