"""meshfer beside face-api.js, the expression tool people use in JavaScript, on the same images in one run.

Feeds: the README table "How good, how fast" and docs/expression.md ("Beside face-api.js"). Prints, per data root
(every image counted; an image where a tool finds no face is wrong): accuracy, macro-F1 and recall per class of
face-api.js's expression network (@vladmandic/face-api 1.7.15, 310 KB, TensorFlow.js on its WASM backend, one
thread), of `hybrid-base` and of the default `hybrid`; and the milliseconds per image of each, measured in the
same run on this machine.

    cd scripts/peers && npm ci && cd ../..      # once: face-api.js and TensorFlow.js, pinned by package-lock.json
    python scripts/bench_peers.py FER_VAL PHOTOS_DEV [--cache-dir DIR] [--timing 200] [--json OUT]

face-api.js's expression network is run on the whole image (`--whole` in scripts/peers/faceapi.mjs): both data
sets hold face crops (FER-2013's 48x48 faces; the muxspace photos are cropped around the face), on which
face-api's own face detector (SSD MobileNet v1) finds almost no face. Its `fearful` is our `fear`. The default
`hybrid` was fine-tuned on the photos of PHOTOS_DEV: there its figures are the out-of-fold ones of its card (each
photo scored by a model that saw neither it nor its person), not a score on photos it saw.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

PEERS = Path(__file__).resolve().parent / "peers"
FACEAPI_LABELS = {"angry": "angry", "disgusted": "disgusted", "fearful": "fear", "happy": "happy",
                  "neutral": "neutral", "sad": "sad", "surprised": "surprised"}


def faceapi_predict(paths: list[Path], labels: list[str], whole: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """face-api.js's expression probabilities (N, len(labels)) for each image, in our label order (NaN
    rows: no face found), and its milliseconds per image (in the node process, decoding excluded).
    ``whole``: its expression network on the whole image; else its detector first (the largest face)."""
    from meshfer.images import read_image

    if not (PEERS / "node_modules").is_dir():
        raise SystemExit(f"run 'npm ci' in {PEERS} first (face-api.js and TensorFlow.js)")
    buf = bytearray()
    for path in paths:
        rgb = read_image(path)
        buf += struct.pack("<II", rgb.shape[0], rgb.shape[1]) + np.ascontiguousarray(rgb).tobytes()
    proc = subprocess.run(["node", str(PEERS / "faceapi.mjs"), *(["--whole"] if whole else [])], input=bytes(buf),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr.decode()[-2000:])
    print(proc.stderr.decode().strip())
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    proba = np.full((len(paths), len(labels)), np.nan)
    for i, row in enumerate(rows):
        if row["face"]:
            for name, p in row["expressions"].items():
                proba[i, labels.index(FACEAPI_LABELS[name])] = p
    return proba, np.array([row["ms"] for row in rows])


def metrics_of(proba: np.ndarray, y: np.ndarray, labels: list[str]) -> dict[str, Any]:
    from meshfer.training.finetune import photo_metrics

    return photo_metrics(proba, y, labels)


def meshfer_ms(paths: list[Path], model: str, landmarker: str | None) -> np.ndarray:
    """Milliseconds per image of the whole meshfer pipeline (decode, landmarker, crop, features, the
    expression model), IMAGE mode, one image at a time."""
    from meshfer.landmarks import LandmarkerOptions
    from meshfer.predict import Predictor

    out = []
    with Predictor(expression=model, eyes=None, gaze=None, mouth=None,
                   landmarker=LandmarkerOptions(model_path=landmarker)) as predictor:
        predictor.predict_image(paths[0])  # warm-up
        for path in paths:
            t0 = time.perf_counter()
            predictor.predict_image(path)
            out.append((time.perf_counter() - t0) * 1000)
    return np.array(out)


def row(name: str, m: dict[str, Any], ms: float | None, labels: list[str]) -> str:
    present = [lab for lab in labels if m["per_class"][lab]["support"] > 0]
    recall = " ".join(f"{m['per_class'][lab]['recall']:.2f}" for lab in present)
    speed = f"{ms:8.1f}" if ms is not None else "       -"
    return f"  {name:<44} {m['accuracy']:.3f}  {m['macro_f1']:.3f}  {recall}  {speed}"


def main() -> None:
    from meshfer.evaluation import evaluate_table
    from meshfer.extract import extract_folder
    from meshfer.landmarks import LandmarkerOptions
    from meshfer.models.registry import get_card, load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="+", type=Path, help="data roots (face_<label> folders)")
    ap.add_argument("--cache-dir", default=None, help="mesh cache (meshfer extract's)")
    ap.add_argument("--landmarker", default=None)
    ap.add_argument("--timing", type=int, default=200, help="images per data root timed for meshfer")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--detect", action="store_true",
                    help="also face-api.js's usual chain: its face detector (SSD MobileNet v1), then the network")
    args = ap.parse_args()

    default = get_card("hybrid")
    labels = list(default.labels)
    report: dict[str, Any] = {}
    for root in args.data:
        table = extract_folder(root, args.cache_dir, options=LandmarkerOptions(model_path=args.landmarker))
        paths = [Path(p) for p in table.paths]
        y = np.array([labels.index(str(lab)) for lab in table.labels])
        proba, fa_ms = faceapi_predict(paths, labels)
        results = {"face-api.js (expression net, whole image)": (metrics_of(proba, y, labels), float(np.median(fa_ms)))}
        if args.detect:
            proba, fa_ms = faceapi_predict(paths, labels, whole=False)
            m = metrics_of(proba, y, labels)
            results[f"face-api.js (its detector: {m['coverage']:.0%} found)"] = (m, float(np.median(fa_ms)))
        rng = np.random.default_rng(0)
        timed = [paths[i] for i in np.sort(rng.choice(len(paths), min(args.timing, len(paths)), replace=False))]
        for name in ("hybrid-base", "hybrid"):
            model = load_model(name)
            ms = float(np.median(meshfer_ms(timed, name, args.landmarker)))
            oof = model.card.extra.get("out_of_fold")
            tag = Path(model.card.training_data.get("photos", "")).name
            if oof and tag == root.name:
                results[f"meshfer {name} (out of fold)"] = (oof, ms)
            else:
                results[f"meshfer {name}"] = (evaluate_table(model, table), ms)
        present = [lab for lab, i in zip(labels, range(len(labels))) if (y == i).any()]
        print(f"\n{root} ({len(paths)} images; every image counted)")
        print(f"  {'tool':<44} acc.   macro-F1  recall {' / '.join(present)}   ms/image (median)")
        for name, (m, ms) in results.items():
            print(row(name, m, ms, labels))
        report[str(root)] = {name: {"metrics": {k: m[k] for k in ("accuracy", "macro_f1", "per_class", "n_images")},
                                    "ms_per_image": ms} for name, (m, ms) in results.items()}
    print("\nms/image: face-api.js its expression network alone on the decoded image (no detection), in node; "
          "meshfer the whole pipeline from the file (decode, landmarker, crop, features, expression model), "
          f"median of {args.timing} images per data root")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
