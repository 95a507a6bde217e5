"""meshfer models: the registry of shipped models."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import print_json


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "models",
        parents=parents,
        help="list the shipped models: name, task, default, metrics",
        description="List the models shipped with meshfer (name, task, whether it is the task's default, "
        "feature set and validation metrics). Use a name with --model.",
    )
    p.add_argument("--task", choices=["expression", "eye", "mouth", "gaze"], help="only this task")
    p.add_argument("--json", action="store_true", help="one JSON object per model and line (the full cards)")
    p.set_defaults(run=run)


_HEADLINE = ("accuracy", "macro_f1", "unseen_accuracy", "unseen_macro_f1", "r2_x", "r2_y", "muxspace_macro_f1")


def run(args: argparse.Namespace) -> int:
    from ..models import list_models

    cards = list_models(args.task)
    if args.json:
        for card in cards:
            print_json(card.to_dict())
        return 0
    if not cards:
        print("no models installed")
        return 0
    print(f"{'name':<22} {'task':<11} {'default':<8} {'format':<12} {'features':<22} metrics")
    for card in cards:
        metrics = ", ".join(
            f"{k} {card.metrics[k]:.3f}" for k in _HEADLINE if isinstance(card.metrics.get(k), (int, float))
        )
        print(
            f"{card.name:<22} {card.task:<11} {'yes' if card.default else '':<8} {card.format:<12} "
            f"{card.feature_set:<22} {metrics}"
        )
    return 0
