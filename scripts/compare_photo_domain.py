"""Hybrid models with and without the training photos, a photo-domain calibration, and averages of
two models, on the same images (issue 11's "use the photos in training, to fit a domain
calibration, or both, and measure each choice").

Feeds: docs/hybrid.md, the tables "photos used" and "one network with the photos, one without".

    python scripts/compare_photo_domain.py TRAIN_DIR VAL_DIR PHOTOS_TRAIN_DIR PHOTOS_DIR CARD [CARD ...] \
        [--cache-dir DIR] [--average] [--bootstrap N]

For every model card (an exported ``hybrid``): the held-out selection score (what ``meshfer train
hybrid`` chooses on: FER-2013's and the training photos' held-out 10 %), held-out FER-2013 accuracy,
validation accuracy / macro-F1 and PHOTOS_DIR accuracy / macro-F1 / recall per class, reported only.

``+ photo bias``: the model's outputs on photos multiplied by exp(b), b per class fitted on the 90 %
of PHOTOS_TRAIN_DIR that ``meshfer train hybrid`` fits on (class-balanced log-loss among the classes
those photos hold, neutral, happy and surprised; 0 for the others, which they do not show). For a
model trained on those photos the fit is on its own training images. ``--average``: the mean of
the first two cards' probabilities as well. ``--members``: each network of the first two cards on its own
and the two cross pairs (the first card's network 0 with the second's network 1, and the other way round):
what one run training its two members on different data would give, since each member's training is
deterministic. ``--bootstrap N``: how far the held-out selection score can
be trusted to tell the rows apart: N resamples of the held-out images (with replacement, within each
domain), the score of every row minus the first row's on the same resample (a paired bootstrap),
with its 95 % interval and how often the row comes out ahead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from meshfer.hybrid import HybridData, prepare_hybrid, selection_score
from meshfer.models.registry import load_model
from meshfer.training import TrainConfig, load_meshes
from meshfer.training.hybrid import held_out_data, split_photos


def fit_photo_bias(proba: np.ndarray, y: np.ndarray, iters: int = 2000, lr: float = 0.5) -> np.ndarray:
    """Log-prior offsets (n_labels,) for the classes present in ``y`` (the others 0), fitted by
    gradient descent on the class-balanced log-loss of the label among the present classes."""
    present = np.unique(y)
    logp = np.log(np.clip(proba[:, present], 1e-9, 1.0))
    yi = np.searchsorted(present, y)
    w = 1.0 / np.bincount(yi, minlength=len(present))[yi]
    w /= w.sum()
    onehot = np.eye(len(present))[yi]
    b = np.zeros(len(present))
    for _ in range(iters):
        z = logp + b
        q = np.exp(z - z.max(axis=1, keepdims=True))
        q /= q.sum(axis=1, keepdims=True)
        b -= lr * (w[:, None] * (q - onehot)).sum(axis=0)
    full = np.zeros(proba.shape[1])
    full[present] = b - b.mean()
    return full


def _reweight(proba: np.ndarray, b: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    out = proba.copy()
    rows = np.ones(len(out), bool) if rows is None else rows
    out[rows] = out[rows] * np.exp(b)
    return out / out.sum(axis=1, keepdims=True)


def member_probabilities(model, data: HybridData, batch: int = 256) -> list[np.ndarray]:
    """The probabilities of each network averaged in an exported hybrid model (its graph's
    ``m<i>_probabilities``, made graph outputs here), for ``data``'s faces."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from meshfer.crops import standardize

    graph = onnx.load(str(model.card.path.parent / model.card.file))
    names = [n.output[0] for n in graph.graph.node if n.output[0].endswith("_probabilities")]
    if not names:  # one network
        return [model.predict_proba(data.x, data.crops)]
    for name in names:
        graph.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", len(model.card.labels)]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    parts = [session.run(names, {"crop": standardize(data.crops[i:i + batch]), "mesh": data.x[i:i + batch]})
             for i in range(0, len(data), batch)]
    return [np.concatenate([p[j] for p in parts]).astype(np.float64) for j in range(len(names))]


def _report(data: HybridData, proba: np.ndarray, labels: list[str]) -> tuple[float, float, dict[str, float]]:
    """Accuracy and macro-F1 over every image (no face = wrong), recall per class."""
    pred = np.full(len(data.y_all), -1)
    pred[data.found] = proba.argmax(axis=1)
    f1s, recall = [], {}
    for c in np.unique(data.y_all):
        tp = np.sum((pred == c) & (data.y_all == c))
        r = tp / np.sum(data.y_all == c)
        p = tp / max(1, np.sum(pred == c))
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        recall[labels[c]] = float(r)
    return float(np.mean(pred == data.y_all)), float(np.mean(f1s)), recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("train_dir", "val_dir", "photos_train_dir", "photos_dir"):
        parser.add_argument(name, type=Path)
    parser.add_argument("cards", nargs="+", type=Path)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--average", action="store_true", help="also the mean of the first two cards")
    parser.add_argument("--members", action="store_true",
                        help="also each network of the first two cards alone and their cross pairs")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="paired bootstrap of the held-out score against the first row (N resamples)")
    args = parser.parse_args()
    config = TrainConfig(train_dir=args.train_dir, val_dir=args.val_dir, cache_dir=args.cache_dir)
    train, val = load_meshes(args.train_dir, config), load_meshes(args.val_dir, config)
    photos_train, photos = load_meshes(args.photos_train_dir, config), load_meshes(args.photos_dir, config)

    models = [load_model(card) for card in args.cards]
    labels, fs = list(models[0].card.labels), models[0].card.feature_set
    k = len(labels)
    held = held_out_data(train, val, photos_train, fs, labels, seed=0)
    sets = {"held": held, "val": prepare_hybrid(val, fs, labels, "fer2013"),
            "photos": prepare_hybrid(photos, fs, labels, "photos")}
    fit_rows = split_photos(photos_train, 0)[0]
    fit = prepare_hybrid(photos_train.subset(fit_rows), fs, labels, "photos")
    sets["fit_photos"] = fit

    def proba(model, data: HybridData) -> np.ndarray:
        return model.predict_proba(data.x, data.crops, data.x_mirror if model.needs_mirror else None)

    outputs = {card.parent.name + "/" + card.name: {key: proba(m, d) for key, d in sets.items()}
               for card, m in zip(args.cards, models)}
    if args.average and len(models) > 1:
        a, b = list(outputs)[:2]
        outputs[f"mean of {a} and {b}"] = {key: 0.5 * (outputs[a][key] + outputs[b][key]) for key in sets}

    if args.members and len(models) > 1:
        a, b = list(outputs)[:2]
        per = {name: {key: member_probabilities(m, d) for key, d in sets.items()}
               for name, m in zip((a, b), models[:2])}
        for name in (a, b):
            for i in range(len(per[name]["held"])):
                outputs[f"{name} network {i}"] = {key: per[name][key][i] for key in sets}
        if len(per[a]["held"]) == len(per[b]["held"]) == 2:
            outputs[f"{a} net 0 + {b} net 1"] = {key: 0.5 * (per[a][key][0] + per[b][key][1]) for key in sets}
            outputs[f"{b} net 0 + {a} net 1"] = {key: 0.5 * (per[b][key][0] + per[a][key][1]) for key in sets}

    photo_rows = held.domain == "photos"
    fer_rows = ~photo_rows
    held_preds: dict[str, np.ndarray] = {}
    print(f"{'model':<55} {'held score':>10} {'held FER acc':>12} {'val acc/F1':>12} {'photos acc/F1':>14}  photos recall")
    for name, out in outputs.items():
        bias = fit_photo_bias(out["fit_photos"], fit.y)
        variants = {name: (out["held"], out["photos"]),
                    f"{name} + photo bias": (_reweight(out["held"], bias, photo_rows), _reweight(out["photos"], bias))}
        for label, (h, ph) in variants.items():
            held_preds[label] = h.argmax(axis=1)
            score = selection_score(held, held_preds[label], k)
            held_fer = float(np.mean(h[fer_rows].argmax(axis=1) == held.y[fer_rows]))
            va, vf, _ = _report(sets["val"], out["val"], labels)
            pa, pf, rec = _report(sets["photos"], ph, labels)
            recall = " ".join(f"{lab[:3]} {r:.2f}" for lab, r in rec.items())
            print(f"{label:<55} {score:>10.4f} {held_fer:>12.3f} {va:>6.3f}/{vf:.3f} {pa:>7.3f}/{pf:.3f}  {recall}")
        print(f"{'':<55} photo bias: " + " ".join(f"{lab[:3]} {v:+.2f}" for lab, v in zip(labels, bias) if v))
    if args.bootstrap:
        print(f"\nheld-out score minus the first row's, {args.bootstrap} paired resamples of the held-out images "
              f"({int(fer_rows.sum())} FER-2013, {int(photo_rows.sum())} photos, resampled within each):")
        print(f"{'model':<55} {'difference':>10} {'95% interval':>18} {'ahead':>6}")
        rng = np.random.default_rng(0)
        groups = [np.flatnonzero(held.domain == d) for d in np.unique(held.domain)]
        names = list(held_preds)
        diffs = np.zeros((args.bootstrap, len(names)))
        for i in range(args.bootstrap):
            rows = np.concatenate([rng.choice(g, len(g)) for g in groups])
            sample = held.subset(rows)
            scores = [selection_score(sample, held_preds[n][rows], k) for n in names]
            diffs[i] = np.array(scores) - scores[0]
        for j, name in enumerate(names[1:], start=1):
            lo, hi = np.percentile(diffs[:, j], [2.5, 97.5])
            print(f"{name:<55} {diffs[:, j].mean():>+10.4f} {f'[{lo:+.4f}, {hi:+.4f}]':>18} "
                  f"{np.mean(diffs[:, j] > 0):>6.2f}")


if __name__ == "__main__":
    main()
