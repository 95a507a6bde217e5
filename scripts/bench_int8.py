"""int8 static quantisation of the default hybrid's pixel branch: what it costs in accuracy and gains in time.

Feeds: docs/performance.md, "One graph per face" (int8). The shipped `hybrid` graph's convolutions are quantised
with ONNX Runtime (static, QDQ, per-tensor weights: per-channel fails on the depthwise kernels), calibrated on held-out FER-2013 training crops (never
validation); then both graphs are scored on FER-2013 validation (every image counted, no face = wrong) and on the
photos of PHOTOS_DEV, and timed one face per call, alternated. The photos were in the default's fine-tuning, so
their figure here is the change quantisation makes on photos it saw, not an out-of-fold score. The rule of the
issue: ship only if validation accuracy and photo macro-F1 drop by at most 0.003 and it is faster.

    python scripts/bench_int8.py FER_TRAIN FER_VAL PHOTOS_DEV [--cache-dir DIR] [--calibration 512] [--format qdq|qoperator]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    from meshfer.crops import standardize
    from meshfer.evaluation import evaluate_table
    from meshfer.extract import extract_folder
    from meshfer.models.onnx import HybridOnnxModel
    from meshfer.models.registry import get_card
    from meshfer.training.hybrid import held_out_data

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fer_train", type=Path)
    ap.add_argument("fer_val", type=Path)
    ap.add_argument("photos", type=Path)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--calibration", type=int, default=512, help="held-out training faces to calibrate on")
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--format", choices=["qdq", "qoperator"], default="qdq",
                    help="QDQ (QuantizeLinear/DequantizeLinear around float operators, fused by ONNX Runtime) or "
                    "QOperator (QLinearConv)")
    args = ap.parse_args()

    card = get_card("hybrid")
    train, val, photos = (extract_folder(p, args.cache_dir, progress=False) for p in (args.fer_train, args.fer_val, args.photos))
    held = held_out_data(train, val, None, card.feature_set, card.labels)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(held.x), min(args.calibration, len(held.x)), replace=False))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(pick)

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = next(self.rows, None)
            if i is None:
                return None
            return {"crop": standardize(held.crops[i:i + 1]), "mesh": held.x[i:i + 1].astype(np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "hybrid-int8.onnx"
        pre = Path(tmp) / "hybrid-pre.onnx"
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(card.model_path), str(pre), skip_symbolic_shape=True)  # shapes inferred, graph simplified
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ if args.format == "qdq" else QuantFormat.QOperator,
                        op_types_to_quantize=["Conv"], per_channel=False, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
        data = out.read_bytes()
    models = {"float32 (shipped)": HybridOnnxModel(card), "int8 convolutions": HybridOnnxModel(card, data)}
    print(f"format {args.format}")
    print(f"calibrated on {len(pick)} held-out FER-2013 training faces; int8 file {len(data) / 1e6:.2f} MB "
          f"(float32 {card.model_path.stat().st_size / 1e6:.2f} MB)")
    scores = {name: (evaluate_table(m, val), evaluate_table(m, photos)) for name, m in models.items()}
    from meshfer import features

    f = val.found
    x = features.compute(card.feature_set, val.landmarks[f], val.blendshapes[f], val.image_sizes[f])
    crops = val.crops[f]
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(3):
        for name, m in models.items():
            t = []
            for i in range(args.calls):
                k = i % len(x)
                a = time.perf_counter()
                m.predict_proba(x[k:k + 1], crops[k:k + 1])
                t.append(time.perf_counter() - a)
            times[name].append(float(np.median(t[args.calls // 8:])) * 1000)
    print(f"{'':<20} {'validation acc':>14} {'macro-F1':>9} {'photos acc':>11} {'macro-F1':>9}   ms per face (3 rounds)")
    for name, (v, p) in scores.items():
        print(f"{name:<20} {v['accuracy']:>14.4f} {v['macro_f1']:>9.4f} {p['accuracy']:>11.4f} {p['macro_f1']:>9.4f}   "
              + "  ".join(f"{t:.3f}" for t in times[name]))
    (v0, p0), (v1, p1) = scores.values()
    ok = (v0["accuracy"] - v1["accuracy"] <= 0.003 and p0["macro_f1"] - p1["macro_f1"] <= 0.003
          and np.median(times["int8 convolutions"]) < np.median(times["float32 (shipped)"]))
    print(f"the issue's rule (drops <= 0.003 and faster): {'met' if ok else 'not met'}")


if __name__ == "__main__":
    main()
