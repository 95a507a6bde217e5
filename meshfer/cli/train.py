"""meshfer train: reproduce a shipped model (or train your own) from a data folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import positive_int, print_json


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    from ..training import RECIPES

    p = sub.add_parser(
        "train",
        parents=parents,
        help="train a model from a data folder and save it with its model card",
        description="Train model NAME on TRAIN_DIR (label folders), select and report on --val, and write "
        "<NAME>.json and its model file to --output-dir. The shipped models were made this way (their cards "
        "say with which data and options). Existing files are kept unless --overwrite.",
    )
    p.add_argument("name", metavar="NAME", help=f"model to train: {', '.join(sorted(RECIPES))}")
    p.add_argument("train_dir", metavar="TRAIN_DIR", type=Path, help="folder of <prefix><label> sub-folders")
    p.add_argument("--val", type=Path, metavar="DIR", help="validation folder (default: a held-out split of TRAIN_DIR)")
    p.add_argument("-o", "--output-dir", type=Path, default=Path("models"), metavar="DIR",
                   help="where to write the model and its card (default: ./models)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="keep extracted meshes here (re-runs are fast)")
    p.add_argument("--workers", type=positive_int, metavar="N", help="worker processes for mesh extraction")
    p.add_argument("--limit-per-class", type=positive_int, metavar="N", help="use at most N images per class")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--default", action="store_true", help="mark the model as its task's default")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe-specific option (JSON value), e.g. --option epochs=5; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model of that name")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")
    p.set_defaults(run=run)


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

    try:
        recipe = get_recipe(args.name)
    except KeyError as exc:
        raise SystemExit(f"meshfer train: error: {exc.args[0]}") from None
    config = TrainConfig(
        train_dir=args.train_dir, val_dir=args.val, output_dir=args.output_dir, cache_dir=args.cache_dir,
        workers=args.workers, limit_per_class=args.limit_per_class, seed=args.seed, overwrite=args.overwrite,
        landmarker=Path(args.landmarker) if args.landmarker else None, default=args.default,
        options=_parse_options(args.option),
    )
    card = recipe(args.name, config)
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
