"""meshfer train: reproduce a shipped model (or train your own) from a data folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import add_engine_options, engine_to_env, positive_int, print_json, warn


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from ..training import RECIPES

    p = sub.add_parser(
        "train",
        parents=parents,
        help="train a model from a data folder and save it with its model card",
        description="Train model NAME on TRAIN_DIR (label folders), select and report on --val, and write "
        "<NAME>.json and its model file to --output-dir. The shipped models were made this way (their cards "
        "say with which data and options). Existing files are kept unless --overwrite. Without --val, TRAIN_DIR "
        "is taken for a single data root (such as the data set's face_* folders extracted into one folder): the "
        "expression models fit on the training side of its fixed split and report on its validation side, the "
        "split the notebooks use (10% of each class to validation; byte-identical pictures and augmented copies "
        "stay with their source). It is laid out as two folders of links beside a CSV listing every image's "
        "side, in $MESHFER_SPLIT_DIR, else output/split of the repository it runs in, else the user cache "
        "folder; 'meshfer evaluate TRAIN_DIR --split validation' scores the same images. Without --val, eyes, "
        "mouth and gaze hold out 10% of TRAIN_DIR by image group themselves (as the shipped ones were made). "
        "'train hybrid' with --option finetune_from=hybrid-base --option photos_train_dir=DIR --option "
        "finetune_photos_dir=DIR fine-tunes that exported network on photos instead of training from scratch: this "
        "made the default hybrid (its card records the recipe, the identity folds and the out-of-fold figures).",
    )
    p.add_argument("name", metavar="NAME", help=f"model to train: {', '.join(sorted(RECIPES))}")
    p.add_argument("train_dir", metavar="TRAIN_DIR", type=Path, help="folder of <prefix><label> sub-folders")
    p.add_argument("--val", type=Path, metavar="DIR",
                   help="validation folder (default: the fixed split of TRAIN_DIR, see above)")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("models"), metavar="DIR",
                   help="where to write the model and its card (default: ./models)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="keep extracted meshes here (re-runs are fast)")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="worker processes (or Ray actors with --engine ray) for mesh extraction")
    add_engine_options(p)
    p.add_argument("--limit-per-class", type=positive_int, metavar="N", help="use at most N images per class")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--default", action="store_true", help="mark the model as its task's default")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe-specific option (JSON value), e.g. --option epochs=5; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model of that name")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")
    p.set_defaults(run=run)


#: Recipes that hold out part of TRAIN_DIR themselves when there is no --val (as the shipped ones were made).
OWN_HOLD_OUT = ("eyes", "mouth", "gaze")


def _fixed_split(root: Path) -> tuple[Path, Path]:
    """The training and validation folders (links) of the fixed split of ``root``, said on stderr."""
    import sys

    from ..datapaths import default_split_base, fixed_split, split_view

    view = split_view(fixed_split(root), default_split_base(package=False))
    counts = view.split.counts()
    print(f"meshfer: no --val: training on the training side of the fixed split of {root} ({counts['train']} images), "
          f"validating on its validation side ({counts['validation']} images); the split: {view.csv_path}",
          file=sys.stderr)
    return view.train_dir, view.val_dir


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"meshfer train: error: --option {item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from ..training import TrainConfig, get_recipe

    engine_to_env(args)  # the recipes extract through extract_folder, which reads $MESHFER_ENGINE

    try:
        recipe = get_recipe(args.name)
    except KeyError as exc:
        raise SystemExit(f"meshfer train: error: {exc.args[0]}") from None
    train_dir, val_dir = args.train_dir, args.val
    if val_dir is None and args.name not in OWN_HOLD_OUT:
        train_dir, val_dir = _fixed_split(train_dir)
    config = TrainConfig(
        train_dir=train_dir, val_dir=val_dir, output_dir=args.output_dir, cache_dir=args.cache_dir,
        workers=args.workers, limit_per_class=args.limit_per_class, seed=args.seed, overwrite=args.overwrite,
        landmarker=Path(args.landmarker) if args.landmarker else None, default=args.default,
        options=_parse_options(args.option),
    )
    card = recipe(args.name, config)
    _rebuild_fused(card)
    if args.json:
        print_json(card.to_dict())
    else:
        print(f"saved {card.name} ({card.task}) to {card.path}")
        for key, value in card.metrics.items():
            if isinstance(value, float):
                print(f"  {key}: {value:.4f}")
            elif isinstance(value, int):
                print(f"  {key}: {value}")
    return 0


def _rebuild_fused(card: object) -> None:
    """A new default in the package's own models folder: the fused graph of the default models is
    written again from the shipped files (the old one no longer matches them and would go unused)."""
    from ..errors import ModelError
    from ..models.fused import build_default_fused
    from ..models.registry import _shipped, models_dir

    path = getattr(card, "path", None)
    if not getattr(card, "default", False) or path is None or Path(path).resolve().parent != models_dir().resolve():
        return
    _shipped.cache_clear()
    try:
        warn(f"rebuilt the fused graph of the default models: {build_default_fused()}")
    except ModelError as exc:
        warn(f"the fused graph of the default models was not rebuilt ({exc}); prediction runs the separate models")

