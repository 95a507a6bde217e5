"""ONNX Runtime intra-op threads for the fused graph of the default models, one face per call.

Feeds: docs/performance.md, "One graph per face" (thread settings). Runs the shipped fused graph
(meshfer/data/models/fused/defaults.onnx) on real meshes and crops, one face per call as in the video loop,
with 1 thread, 2 threads and ONNX Runtime's default (all cores), alternated over several rounds so that the
machine's load weighs on each alike, and prints the median milliseconds per face of each round.

    python scripts/bench_threads.py MESHES.npz [--rounds 3] [--calls 400]   (a file written by meshfer extract, with crops)
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import onnxruntime as ort

    from meshfer.meshtable import MeshTable
    from meshfer.models.fused import DEFAULT_FUSED, fused_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("meshes", help="a mesh table with crops (meshfer extract's output)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=400)
    args = ap.parse_args()

    table = MeshTable.load(args.meshes)
    found = table.found
    arrays = (table.landmarks[found].astype(np.float32), table.blendshapes[found].astype(np.float32),
              table.image_sizes[found].astype(np.float32), table.crops[found].astype(np.float32))
    names = ("landmarks", "blendshapes", "image_sizes", "crop")
    path = str(fused_dir() / f"{DEFAULT_FUSED}.onnx")
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for threads, label in ((1, "1 thread"), (2, "2 threads"), (0, "default (all cores)")):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            times = []
            for i in range(args.calls):
                k = i % len(arrays[0])
                feeds = {n: a[k:k + 1] for n, a in zip(names, arrays)}
                t0 = time.perf_counter()
                session.run(None, feeds)
                times.append(time.perf_counter() - t0)
            results.setdefault(label, []).append(float(np.median(times[len(times) // 8:])) * 1000)
    print(f"fused graph, one face per call, {len(arrays[0])} faces of {args.meshes}; median ms per round")
    for label, values in results.items():
        print(f"  {label:<22} " + "  ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
