"""Local worker processes vs the Ray engine for mesh extraction, in one run (issues 14 and 25).

Feeds: docs/ray.md, "Measured" (throughput of both engines, Ray's start-up and scheduling overhead).

    python scripts/bench_engines.py /path/to/photos [--limit 1000] [--workers 2] [--address ADDR]
        [--order local,ray,ray-warm] [--api actors|data] [--settle 10] [--json]

Each engine extracts the same images from scratch (no cache), start-up included (spawning the
worker processes; starting or joining Ray and its actors). Printed: images/s for both and their
ratio; whether the meshes agree (same rows and status, largest landmark difference); for Ray, the
start-up, the throughput per actor (images per second of an actor's own work), and the per-image
scheduling overhead (the time actors sat idle between two of their batches, i.e. Ray's dispatch
and transfers, divided by the images) against MediaPipe's own time per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _images(data: Path, limit: int | None) -> list[Path]:
    """The images of ``data`` (sorted), or ``limit`` of them evenly spread over the list."""
    from meshfer.datasets import scan_dataset, scan_paths

    if any(c.is_dir() and c.name.startswith("face_") for c in data.iterdir()):
        dataset = scan_dataset(data)
    else:
        dataset = scan_paths([data])
    paths = sorted(dataset.paths)
    if limit is not None and limit < len(paths):
        paths = [paths[int(k * len(paths) / limit)] for k in range(limit)]
    return paths


def run(data: Path, limit: int | None, workers: int, address: str | None, order: str,
        api: str = "actors", settle: float = 10.0) -> dict[str, object]:
    """Both engines on the same images; a dict of the figures."""
    from meshfer.extract import ExtractStats, extract
    from meshfer.ray_engine import RayEngine

    paths = _images(data, limit)
    results: dict[str, dict[str, float]] = {}
    tables = {}
    for name in order.split(","):
        stats = ExtractStats()
        engine = "local" if name == "local" else RayEngine(address=address, api=api)
        if name == "ray-warm":  # an instance already running: its own start-up is not counted
            results["instance_start_s"] = {"seconds": round(_start_ray(workers), 2)}
            time.sleep(settle)  # as one up for a while: its agents done with their own start
        t = time.perf_counter()
        tables[name] = extract(paths, None, workers=workers, engine=engine, progress=False, stats=stats)
        wall = time.perf_counter() - t
        n = stats.n_processed
        results[name] = {
            "images": n, "seconds": round(wall, 2), "images_per_s": round(n / wall, 2),
            "mediapipe_ms_per_image": round(1000 * stats.inference_s / n, 2),
            "work_ms_per_image": round(1000 * stats.worker_s / n, 2),
        }
        if name == "ray-warm":
            import ray

            ray.shutdown()
        if name.startswith("ray"):
            results[name].update(
                startup_s=round(stats.engine_start_s, 2),
                first_batch_s=round(stats.engine_ready_s, 2),
                batches=stats.n_batches,
                per_actor_images_per_s=round(n / stats.worker_s, 2),
                scheduling_ms_per_image=round(1000 * stats.actor_gap_s / n, 3),
                scheduling_vs_mediapipe_pct=round(100 * stats.actor_gap_s / stats.inference_s, 2),
                steady_images_per_s=round(n / max(1e-9, wall - stats.engine_start_s), 2),
            )
    ray_name = "ray" if "ray" in tables else "ray-warm"
    a, b = tables["local"], tables[ray_name]
    extra = {}
    if "ray-warm" in results:
        extra = {"ray_warm": results["ray-warm"], "instance_start_s": results["instance_start_s"]["seconds"],
                 "ray_warm_vs_local": round(results["ray-warm"]["images_per_s"] / results["local"]["images_per_s"], 3)}
    same_rows = bool(np.array_equal(a.paths, b.paths) and np.array_equal(a.status, b.status)
                     and np.array_equal(a.errors, b.errors))
    both = a.found & b.found
    diff = float(np.max(np.abs(a.landmarks[both] - b.landmarks[both]))) if both.any() else 0.0
    return {
        "data": str(data), "images": len(paths), "workers": workers, "address": address, "api": api,
        "local": results["local"], "ray": results.get("ray"),
        "ray_vs_local": round(results["ray"]["images_per_s"] / results["local"]["images_per_s"], 3)
        if "ray" in results else None,
        "same_rows_and_status": same_rows, "max_landmark_difference": diff,
        "faces": int(a.found.sum()), **extra,
    }


def _start_ray(workers: int) -> float:
    """A local Ray instance in this process, as the engine starts one; seconds it took."""
    import logging
    import os

    import ray

    t = time.perf_counter()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    logging.getLogger("ray").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=workers, object_store_memory=256 * 2**20, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.ERROR)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="a data root of face_<label> folders, or a folder of images")
    p.add_argument("--limit", type=int, default=1000, help="images (default: 1000; 0: all)")
    p.add_argument("--workers", type=int, default=None, help="worker processes / Ray actors (default: all cores)")
    p.add_argument("--address", default=None, help="Ray address to join (default: a local instance, started here)")
    p.add_argument("--order", default="local,ray,ray-warm",
                   help="engines in the order they run: local, ray (starting its instance), ray-warm (on an "
                   "instance started beforehand, not counted) (default: local,ray,ray-warm)")
    p.add_argument("--api", choices=["actors", "data"], default="actors",
                   help="how the Ray engine runs its actors: Ray Core actors (default) or Ray Data's map_batches")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds the instance of ray-warm is left idle after its start (default: 10)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = p.parse_args(argv)
    from meshfer.extract import default_workers

    workers = args.workers or default_workers()
    r = run(args.data, args.limit or None, workers, args.address, args.order, args.api, args.settle)
    if args.json:
        print(json.dumps(r))
        return 0
    loc, ray = r["local"], r["ray"]
    print(f"{r['images']} images from {r['data']}, {workers} workers / actors, start-up included; "
          f"Ray engine api={r['api']}")
    print(f"{'engine':<8} {'seconds':>8} {'images/s':>9} {'MediaPipe ms/img':>17} {'work ms/img':>12}")
    for name, x in (("local", loc), ("ray", ray), ("ray-warm", r.get("ray_warm"))):
        if x is not None:
            print(f"{name:<8} {x['seconds']:>8.2f} {x['images_per_s']:>9.2f} {x['mediapipe_ms_per_image']:>17.2f} "
                  f"{x['work_ms_per_image']:>12.2f}")
    if ray is not None:
        print(f"ray / local throughput: {r['ray_vs_local']:.3f}x")
        print(f"ray: start-up {ray['startup_s']:.2f} s (instance), {ray['first_batch_s']:.2f} s to the first batch "
              f"(actors too); after it {ray['steady_images_per_s']:.2f} images/s; "
              f"per actor {ray['per_actor_images_per_s']:.2f} images/s of its own work; {ray['batches']} batches")
        print(f"ray scheduling overhead: {ray['scheduling_ms_per_image']:.3f} ms per image = "
              f"{ray['scheduling_vs_mediapipe_pct']:.2f} % of MediaPipe's {ray['mediapipe_ms_per_image']:.2f} ms")
    if "ray_warm" in r:
        w = r["ray_warm"]
        print(f"ray on an instance already running (its start, {r['instance_start_s']:.2f} s, and {args.settle:g} s "
              f"idle after it, not counted): "
              f"{w['seconds']:.2f} s, {w['images_per_s']:.2f} images/s = {r['ray_warm_vs_local']:.3f}x local; "
              f"scheduling {w['scheduling_ms_per_image']:.3f} ms per image = {w['scheduling_vs_mediapipe_pct']:.2f} %; "
              f"{w['first_batch_s']:.2f} s to the first batch; per actor {w['per_actor_images_per_s']:.2f} images/s "
              f"of its own work; {w['batches']} batches")
    print(f"same rows and status: {r['same_rows_and_status']}; largest landmark difference "
          f"{r['max_landmark_difference']:.2e}; faces {r['faces']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
