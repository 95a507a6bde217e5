"""meshfer predict: expression (and eye, gaze, mouth state) for images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import landmarker_options, model_choice, print_json, warn


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        parents=parents,
        help="expression, eye states, gaze and mouth state of the face in each image",
        description="Predict the expression of the face in each image (folders expand to their images), with "
        "the shipped default models unless told otherwise. Also eye states, gaze and mouth state when those "
        "models are installed. An image without a face, or that cannot be read, is reported in its own line "
        "and the run goes on. 'meshfer models' lists the model names.",
    )
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="image files and/or folders of images")
    p.add_argument("--samples", action="store_true",
                   help="also predict the sample photos shipped in the package (one per class but fear; "
                   "meshfer/data/samples/README.md says where they come from)")
    p.add_argument("--model", default="default", help="expression model name or card path (default: the default model)")
    p.add_argument("--eyes", type=model_choice, default="default", help="eye-state model, or 'none'")
    p.add_argument("--gaze", type=model_choice, default="default", help="gaze model, or 'none'")
    p.add_argument("--mouth", type=model_choice, default="default", help="mouth-state model, or 'none'")
    p.add_argument("--json", action="store_true", help="one JSON object per image and line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..datasets import scan_paths
    from ..errors import MeshferError
    from ..predict import Predictor
    from ..samples import sample_images, samples_dir

    if not args.inputs and not args.samples:
        raise MeshferError("give images or folders (IMAGE_OR_DIR), or --samples for the shipped sample photos")
    samples = [str(p) for p in sample_images()] if args.samples else []
    names = {s: Path(s).relative_to(samples_dir()).as_posix() for s in samples}
    dataset = scan_paths([*args.inputs, *samples])
    for problem in dataset.problems:
        if args.json:
            print_json({"image": problem.path, "face": False, "reason": problem.reason})
        else:
            warn(f"skipped {problem}")
    with Predictor(
        expression=args.model, eyes=args.eyes, gaze=args.gaze, mouth=args.mouth, landmarker=landmarker_options(args)
    ) as predictor:
        table = TableWriter(names) if not args.json else None
        for result in predictor.iter_images(dataset.paths):
            if table is None:
                line = result.to_dict()
                if result.mesh is not None:
                    line["faces_found"] = int(getattr(result.mesh, "faces_found", 1))
                print_json(line)
            else:
                table.write(result)
    return 0 if dataset.records else 1


_CONTROL = {c: f"\\x{c:02x}" for c in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t"}


class TableWriter:
    """A readable line per image: expression with its probability, eyes, gaze, mouth."""

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self.header_done = False
        self.names = names or {}  # shorter names to show for some paths (the shipped samples)

    def write(self, result: Any) -> None:
        if not self.header_done:
            print(f"{'image':<40} {'expression':<20} {'left eye':<14} {'right eye':<14} {'gaze x,y':<14} mouth")
            self.header_done = True
        image = self.names.get(result.image, result.image).translate(_CONTROL)  # one line per image, whatever the file name holds
        name = image if len(image) <= 40 else "..." + image[-37:]
        if not result.face:
            print(f"{name:<40} ({result.reason})", flush=True)
            return
        p = result.prediction
        expr = f"{p.expression.label} {p.expression.probabilities[p.expression.label]:.2f}" if p.expression else "-"
        left = f"{p.eyes['left'].label}" if p.eyes else "-"
        right = f"{p.eyes['right'].label}" if p.eyes else "-"
        gaze = f"{p.gaze['x']:+.2f},{p.gaze['y']:+.2f}" if p.gaze else "-"
        mouth = p.mouth.label if p.mouth else "-"
        n = int(getattr(result.mesh, "faces_found", 1)) if result.mesh is not None else 1
        note = f"   ({n} faces found: the largest)" if n > 1 else ""
        print(f"{name:<40} {expr:<20} {left:<14} {right:<14} {gaze:<14} {mouth}{note}", flush=True)
