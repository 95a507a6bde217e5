"""``meshfer train hybrid --option finetune_from=BASE``: an exported hybrid network fine-tuned on
photos (:mod:`meshfer.training.finetune`), reported out of fold, exported and checked.

This is how the shipped ``hybrid`` is made from ``hybrid-base`` (the network trained from scratch by
``meshfer train hybrid``, kept in the package under its SHA-256):

- the FER-2013 subsample, held-out images and training photos are those of ``meshfer train hybrid``
  with the same seed (FER-2013 without the copies of ``--val`` images);
- every photo of ``finetune_photos_dir`` (``muxspace-dev``) is trained on, so the photo figures
  the card reports are the out-of-fold ones of the same recipe in identity folds (read from the
  fold cache, or run with ``--option out_of_fold=run``), never the final model's score on photos it saw;
- FER-2013 validation is scored with the exported model, every image counted;
- the final members' weights are cached as soon as they are trained, so a killed run resumes there.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import load_meshes, short_path

__all__ = ["FINETUNE_OPTIONS", "train", "default_cache"]

#: Options of this path besides the recipe's (:data:`meshfer.training.finetune.DEFAULT_FINETUNE`).
FINETUNE_OPTIONS = ("finetune_from", "photos_train_dir", "finetune_photos_dir", "out_of_fold", "finetune_cache",
                    "n_folds", "processes", "mirror_tta")
#: Mirror averaging of the fine-tuned network: off unless asked (``--option mirror_tta=auto|true``). The
#: recipes are chosen by out-of-fold figures without it, and it doubles the network's time, which
#: fine-tuning is meant to leave as it was.
FINETUNE_MIRROR = "false"


def default_cache() -> Path:
    """Where fold results and fine-tuned weights are kept: ``<user cache>/finetune``."""
    from ..assets import cache_dir

    return cache_dir() / "finetune"


def _say(text: str) -> None:
    import sys

    print(f"meshfer train hybrid: {text}", file=sys.stderr, flush=True)


def _final_members(base: Any, data: Any, options: dict[str, Any], folder: Path, seed: int,
                   processes: int | None) -> tuple[list[list[np.ndarray]], list[dict[str, Any]], bool]:
    """The members fine-tuned on every photo: (weights, histories, resumed), through
    ``folder/all.weights.npz``."""
    import json

    from .finetune import _load_weights, _save_weights, finetune_members, fold_training_data

    path, info = folder / "all.weights.npz", folder / "all.json"
    if path.exists() and info.exists():
        try:
            return _load_weights(path), json.loads(info.read_text())["histories"], True
        except (OSError, KeyError, ValueError):
            pass  # a damaged file is trained again
    train_data = fold_training_data(data, None, options)
    outs = finetune_members(base, train_data, options, seed=seed, processes=processes)
    weights = [o["weights"] for o in outs]
    _save_weights(path, weights)
    histories = [o["history"] for o in outs]
    info.write_text(json.dumps({"histories": histories, "faces": int(len(train_data))}))
    return weights, histories, False


def train(name: str, config: Any) -> Any:
    """Fine-tune the exported hybrid ``finetune_from`` (a model name or card file) on FER-2013
    (``config.train_dir``, the copies of ``config.val_dir`` images left out), the training photos
    (``photos_train_dir``) and every photo of ``finetune_photos_dir``; write ``<name>.onnx`` and its
    card. Recipe options are those of :data:`meshfer.training.finetune.DEFAULT_FINETUNE`;
    ``out_of_fold``: ``cached`` (default: the folds' figures when the fold cache holds all of
    them), ``run`` (fine-tune the missing folds: about 7 minutes each) or ``skip``."""
    from ..models.onnx_keras import keras_members
    from ..models.registry import get_card
    from .finetune import DEFAULT_FINETUNE, cross_validate, recipe_key, recipe_option, split_finetune_data
    from .hybrid import (DESCRIPTION, MIRROR_MIN_GAIN, _card_metrics, _headline, _photos_tag, choose_mirror, export_hybrid,
                         held_out_data, mirror_scores)

    start = time.perf_counter()
    options = dict(config.options)
    base = get_card(str(options.pop("finetune_from")), "expression")
    if base.format != "onnx-hybrid":
        raise ValueError(f"finetune_from={base.name}: a hybrid network is needed, not {base.format}")
    photos_train = options.pop("photos_train_dir", None)
    photos_dev = options.pop("finetune_photos_dir", None)
    if photos_train is None or photos_dev is None or config.val_dir is None:
        raise ValueError("fine-tuning needs --val (FER-2013 validation) and --option photos_train_dir=DIR "
                         "--option finetune_photos_dir=DIR (the photos of every class, folded by identity)")
    out_of_fold = str(options.pop("out_of_fold", "cached")).strip().lower()
    if out_of_fold not in ("cached", "run", "skip"):
        raise ValueError(f"--option out_of_fold={out_of_fold}: use cached, run or skip")
    cache = Path(options.pop("finetune_cache", None) or default_cache()).expanduser()
    n_folds = int(options.pop("n_folds", 5))
    processes = options.pop("processes", None)
    mirror_choice = str(options.pop("mirror_tta", FINETUNE_MIRROR)).strip().lower()
    choose_mirror({"plain": 0.0, "mirror_averaged": 0.0}, mirror_choice)  # a bad value fails before any work
    unknown = set(options) - set(DEFAULT_FINETUNE)
    if unknown:
        raise KeyError(f"unknown fine-tuning option(s) {', '.join(sorted(unknown))}; valid: "
                       f"{', '.join([*DEFAULT_FINETUNE, *FINETUNE_OPTIONS])}")
    recipe = {k: recipe_option(k, v) for k, v in options.items()}
    opts = {**DEFAULT_FINETUNE, **recipe}

    train_table, val_table, photos_table, dev_table = (
        load_meshes(Path(p), config) for p in (config.train_dir, config.val_dir, photos_train, photos_dev))
    data = split_finetune_data(train_table, val_table, photos_table, dev_table, photos_dev, base.feature_set,
                               base.labels, n_folds=n_folds, seed=config.seed,
                               fer2013_subsample=int(opts["fer2013_subsample"]))
    key = recipe_key(recipe, base.sha256, data.folds, data.info, config.seed)
    folder = cache / key
    folder.mkdir(parents=True, exist_ok=True)

    oof = None
    if out_of_fold != "skip":
        have = all((folder / f"fold{k}.npz").exists() for k in range(data.folds.n_folds))
        if have or out_of_fold == "run":
            oof = cross_validate(base, data, recipe, cache_dir=cache, seed=config.seed, processes=processes, log=_say)
        else:
            _say(f"no out-of-fold figures: the fold cache {folder} is incomplete (--option out_of_fold=run fine-tunes "
                 f"the {data.folds.n_folds} folds, about 7 minutes each)")
    t0 = time.perf_counter()
    weights, histories, resumed = _final_members(base, data, recipe, folder, config.seed * 1000 + 999, processes)
    _say(f"fine-tuned on every photo {'(from the cache)' if resumed else f'in {(time.perf_counter() - t0) / 60:.1f} min'}")

    members = keras_members(base)
    for model, w in zip(members, weights):
        model.set_weights(w)

    held = held_out_data(train_table, val_table, photos_table, base.feature_set, base.labels, seed=config.seed)
    held_scores, plain, mirrored = mirror_scores(members, held, base.extra.get("domain_prior_ratios"))
    mirror_tta = choose_mirror(held_scores, mirror_choice)

    from ..datasets import copies_of
    from ..hybrid import prepare_hybrid

    copies = copies_of(val_table.paths, train_table.paths)
    check = prepare_hybrid(val_table.subset(np.arange(min(len(val_table), 256))), base.feature_set, base.labels)
    estimator = (f"{base.estimator}; fine-tuned on photos from {base.name} (sha256 {base.sha256[:12]}...)")
    card, scores = export_hybrid(
        members, config.output_dir, name=name, labels=base.labels, feature_set=base.feature_set,
        check_crops=check.crops, check_features=check.x, crop=dict(base.crop or {}), mirror_tta=mirror_tta,
        check_mirrored=check.x_mirror,
        evaluate_on={"validation": val_table, "unseen": val_table.subset(np.flatnonzero(~copies))},
        overwrite=config.overwrite, default=config.default, description=DESCRIPTION + "; fine-tuned on photos of "
        "every class (identity folds)", estimator=estimator, landmarker_sha256=base.landmarker_sha256,
    )
    metrics = _card_metrics(scores, copies, "", held, mirrored if mirror_tta else plain, base.labels)
    tag = _photos_tag(Path(str(photos_dev)))
    oof_metrics = None
    if oof is not None:
        oof_metrics = oof.metrics()
        metrics.update(_headline(oof_metrics, f"{tag}_"))  # out of fold (the card's training_data note says so)
    fer_held_rows = held.domain == "fer2013"
    training_data = {
        **base.training_data,
        "fine_tuned_on": {"fer2013_subsample_faces": data.info["fer2013_subsample"],
                          "photos_train_dir": short_path(photos_train), "photos_fit_faces": data.info["photos_fit_faces"],
                          "finetune_photos_dir": short_path(photos_dev), "finetune_photos": data.info["dev_images"],
                          "finetune_photo_faces": data.info["dev_faces"],
                          "never": "FER-2013's held-out training images and validation folder, muxspace-train's held-out "
                          "photos"},
        "photos": short_path(photos_dev),
        "note": "metrics: every validation image counted (no face found = wrong); photo metrics are out of fold (the "
        "recipe fine-tuned once per identity fold, each photo scored by the fold model that did not see its person); "
        "the recipe was chosen out of fold (README: Photos of people never seen)",
    }
    card = replace(
        card, metrics=metrics, training_data=training_data,
        extra={**card.extra, "hparams": base.extra.get("hparams", {}), "training": opts,
               "base": {"name": base.name, "file": base.file, "sha256": base.sha256},
               "finetune": {"recipe": opts, "key": key, "seed": config.seed, "final_seed": config.seed * 1000 + 999,
                            "data": data.info},
               "folds": data.folds.to_dict(),
               "out_of_fold": oof_metrics,
               "members": [{"seed": config.seed * 1000 + 999 + i, "history": h, "epochs_run": len(h)}
                           for i, h in enumerate(histories)],
               "held_out_selection_scores": held_scores, "mirror_tta_choice": mirror_choice, "mirror_min_gain": MIRROR_MIN_GAIN,
               "held_out_fer2013_faces": int(fer_held_rows.sum()),
               "total_seconds": round(time.perf_counter() - start, 1),
               "parameters": base.extra.get("parameters"), "multiply_adds": base.extra.get("multiply_adds")},
    )
    card.save(Path(config.output_dir) / f"{name}.json")
    return card

