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
    rows = [
        (
            card.name,
            card.task,
            "yes" if card.default else "",
            card.format,
            card.feature_set,
            ", ".join(
                f"{k} {card.metrics[k]:.3f}" for k in _HEADLINE if isinstance(card.metrics.get(k), (int, float))
            ),
        )
        for card in cards
    ]
    header = ("name", "task", "default", "format", "features", "metrics")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[-1])
    if args.task is None:
        from ..models.fused import fused_status

        print(fused_status())
    return 0
