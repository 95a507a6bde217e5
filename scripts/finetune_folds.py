"""Fine-tuning recipes for photos, compared out of fold (issue "Photos of people never seen").

Feeds: docs/finetune.md, the recipes table, and Hybrid/model.ipynb's recipes section (--json).

Measures, for ``hybrid-base`` (the network before fine-tuning) and for each fine-tuning recipe
given, on the same identity folds of the dev photos (``meshfer.folds``): out-of-fold photo macro-F1,
accuracy and recall per class (every photo counted, no face = wrong) and the accuracy on FER-2013's
held-out training images (the mean of the fold models), plus minutes per fold. Feeds the README
table "Photos of people never seen" and, with ``--json Hybrid/finetune_recipes.json``, the recipes
section of ``Hybrid/model.ipynb``. Each fold's result is cached (``--cache-dir``), so a killed run
resumes at the next fold and a finished recipe is printed again at no cost.

    python scripts/finetune_folds.py FER_TRAIN FER_VAL PHOTOS_TRAIN PHOTOS_DEV \\
        [--recipe NAME[:key=value,...]] ... [--cache-dir DIR] [--mesh-cache DIR] [--json OUT]

``--recipe baseline`` is the default recipe (``meshfer.training.finetune.DEFAULT_FINETUNE``);
``--recipe lr2e4:learning_rate=2e-4,epochs=6`` changes options.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from meshfer.models.registry import get_card, load_model
from meshfer.training import TrainConfig
from meshfer.training.finetune import (DEFAULT_FINETUNE, FER2013_TOLERANCE, choose_recipe, cross_validate,
                                      load_finetune_data, photo_metrics, recipe_option)


def parse_recipe(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        options[key] = recipe_option(key, value) if key in DEFAULT_FINETUNE else value
    return name, options


def row(name: str, m: dict, labels: list[str]) -> str:
    recall = " ".join(f"{m['per_class'][c]['recall']:.2f}" for c in labels if m["per_class"][c]["support"])
    fer = m.get("fer2013_held_out_accuracy", float("nan"))
    minutes = np.mean(m.get("seconds_per_fold", [np.nan])) / 60
    return f"{name:<28} {m['macro_f1']:.3f}  {m['accuracy']:.3f}  {recall}   {fer:.3f}   {minutes:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fer_train", type=Path)
    ap.add_argument("fer_val", type=Path)
    ap.add_argument("photos_train", type=Path)
    ap.add_argument("photos_dev", type=Path)
    ap.add_argument("--recipe", action="append", default=[], help="NAME[:key=value,...] (repeatable)")
    ap.add_argument("--model", default="hybrid-base",
                    help="the exported hybrid model to start from (default: hybrid-base, the network before fine-tuning)")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "meshfer" / "finetune")
    ap.add_argument("--mesh-cache", type=Path, default=Path.home() / ".cache" / "meshfer" / "meshes")
    ap.add_argument("--landmarker", type=Path, default=None)
    ap.add_argument("--folds", default=None, help="only these folds, e.g. 0,1")
    ap.add_argument("--json", type=Path, default=None, help="write every recipe's metrics here")
    args = ap.parse_args()

    card = get_card(args.model)
    config = TrainConfig(train_dir=args.fer_train, cache_dir=args.mesh_cache, landmarker=args.landmarker)
    t0 = time.perf_counter()
    data = load_finetune_data(args.fer_train, args.fer_val, args.photos_train, args.photos_dev, config,
                              card.feature_set, card.labels)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {data.info}")
    labels = list(card.labels)
    present = [c for c in labels if np.any(data.dev.y_all == labels.index(c))]
    results = {}
    model = load_model(args.model)
    proba = np.full((len(data.dev_names), len(labels)), np.nan)
    proba[data.dev.found] = model.predict_proba(data.dev.x, data.dev.crops,
                                                data.dev.x_mirror if model.needs_mirror else None)
    base = photo_metrics(proba, data.dev.y_all, labels)
    held = model.predict_proba(data.fer_held.x, data.fer_held.crops, data.fer_held.x_mirror if model.needs_mirror else None)
    base["fer2013_held_out_accuracy"] = float(np.mean(held.argmax(axis=1) == data.fer_held.y))
    results[args.model] = base
    folds = [int(k) for k in args.folds.split(",")] if args.folds else None
    for text in args.recipe or ["baseline"]:
        name, options = parse_recipe(text)
        cv = cross_validate(card, data, options, cache_dir=args.cache_dir, folds=folds)
        results[name] = {**cv.metrics(), "options": cv.options, "key": cv.key}
    print(f"\n{'':<28} macro-F1  acc.  recall {' / '.join(present)}   FER-2013 held-out acc.   min/fold")
    for name, m in results.items():
        print(row(name, m, labels))
    chosen = choose_recipe(results, args.model)
    print(f"\nchosen by the rule (FER-2013 held-out accuracy at least "
          f"{results[args.model]['fer2013_held_out_accuracy'] - FER2013_TOLERANCE:.3f}, then the highest macro-F1): {chosen}")
    if args.json is not None:
        args.json.write_text(json.dumps({"base": args.model, "chosen": chosen, "tolerance": FER2013_TOLERANCE,
                                         "data": data.info, "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
