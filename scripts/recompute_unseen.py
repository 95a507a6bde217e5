"""Recompute the ``unseen_*`` metrics of shipped expression model cards on one set of images.

    python scripts/recompute_unseen.py TRAIN_DIR VAL_DIR [--cache-dir DIR] [NAME ...]

``unseen_*`` are the validation images that are not byte-identical copies of an image of the
training folder: the same 3,309 FER-2013 validation images for every model. Until 2026-12-04 the
mesh-only recipes compared validation with the images they were fitted on, from which the copies
had already been left out, so their ``unseen_*`` counted all 3,589 images while the hybrid's
counted 3,309: the column of ``meshfer models`` meant two things. The recipes now do what this
script does; it updates the cards of models trained before that (metrics only: model files and
their SHA-256 do not change).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from meshfer.evaluation import unseen_metrics
from meshfer.models.registry import get_card, load_model
from meshfer.training import TrainConfig, load_meshes

NOTE = ("unseen_*: the validation images that are not byte-identical copies of an image of the training folder "
        "(the same images for every model, whether or not the copies were left out of training)")


def _drop_empty_crop(path: Path) -> None:
    """ModelCard.save writes ``"crop": {}`` for mesh-only models; their cards never held it."""
    import json

    data = json.loads(path.read_text())
    if data.get("crop") == {}:
        data.pop("crop")
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_dir", type=Path)
    parser.add_argument("val_dir", type=Path)
    parser.add_argument("names", nargs="*", default=["svm", "ensemble", "logreg", "blendshapes", "gnn"])
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    config = TrainConfig(train_dir=args.train_dir, val_dir=args.val_dir, output_dir=Path("."), cache_dir=args.cache_dir)
    train_paths = list(load_meshes(args.train_dir, config).paths)
    val_table = load_meshes(args.val_dir, config)
    for name in args.names:
        card = get_card(name, "expression")
        model = load_model(card)
        unseen = unseen_metrics(model, val_table, train_paths)
        before = {k: card.metrics.get(k) for k in unseen}
        note = str(card.training_data.get("note", ""))
        head = note.split("unseen_*:")[0].rstrip("; ")
        card = replace(card, metrics={**card.metrics, **unseen},
                       training_data={**card.training_data, "note": f"{head}; {NOTE}" if head else NOTE})
        card.save(card.path)
        _drop_empty_crop(card.path)
        print(f"{name}: unseen accuracy {before['unseen_accuracy']:.4f} -> {unseen['unseen_accuracy']:.4f}, "
              f"macro-F1 {before['unseen_macro_f1']:.4f} -> {unseen['unseen_macro_f1']:.4f}, "
              f"images {before['unseen_n_images']} -> {unseen['unseen_n_images']}")


if __name__ == "__main__":
    main()
