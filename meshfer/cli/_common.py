"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def landmarker_options(args: argparse.Namespace, **kwargs: Any) -> Any:
    """LandmarkerOptions from the common ``--landmarker`` option."""
    from ..landmarks import LandmarkerOptions

    return LandmarkerOptions(model_path=getattr(args, "landmarker", None), **kwargs)


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"meshfer: {message}", file=sys.stderr)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def model_choice(text: str) -> str | None:
    """A model name, a card path, or 'none' (task off)."""
    return None if text.lower() in ("none", "off") else text
