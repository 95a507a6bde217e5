"""meshfer evaluate: metrics of an expression model on a labelled data folder."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_engine_options, engine_from_args, landmarker_options, positive_int, print_json, warn


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=parents,
        help="accuracy, macro-F1, per-class table and confusion matrix on a face_<label> folder",
        description="Evaluate an expression model on DATA_DIR (face_<label> folders). Every image counts: one "
        "where no face is found is wrong. Reports accuracy, accuracy on found faces, coverage, macro-F1, "
        "per-class precision/recall/F1 and the confusion matrix.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of face_<label> sub-folders")
    p.add_argument("--model", default="default", help="expression model name or card path (default: the default)")
    p.add_argument("--meshes", metavar="FILE", help="cache the extracted meshes in this .npz (re-runs are fast)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a --meshes file that holds the meshes of another data set instead of refusing "
                   "(the meshes of other images of DATA_DIR are kept in it anyway)")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="worker processes, or Ray actors with --engine ray (default: all cores / all CPUs of the cluster)")
    add_engine_options(p)
    p.add_argument(
        "--exclude-copies-of", metavar="TRAIN_DIR",
        help="leave out the images of DATA_DIR that are byte-identical to an image under TRAIN_DIR (FER-2013's "
        "validation folder holds 280 copies of training images), so no test image was seen in training",
    )
    p.add_argument(
        "--split", choices=["all", "train", "validation"], default="all",
        help="score only one side of the fixed split of DATA_DIR (a single data root): 'validation' is what "
        "'meshfer train NAME DATA_DIR' without --val and the notebooks validate on, 'train' what they fit on "
        "(10%% of each class to validation, byte-identical pictures and augmented copies kept with their source; "
        "augmented copies of validation images are on neither side); default: all images",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..datasets import copies_of, scan_dataset, scan_paths
    from ..evaluation import evaluate_table, format_metrics
    from ..extract import extract
    from ..models import get_card, default_card, load_model

    card = default_card("expression") if args.model == "default" else get_card(args.model, "expression")
    if card is None:
        warn("no expression model is installed")
        return 2
    model = load_model(card)
    if args.split == "all":
        dataset = scan_dataset(args.data_dir)
    else:
        from ..datapaths import fixed_split

        split = fixed_split(args.data_dir)
        dataset = split.dataset(args.split)
    for problem in dataset.problems:
        warn(f"skipped {problem}")
    unknown = sorted(set(dataset.labels) - set(card.labels))
    if unknown:
        warn(f"labels {', '.join(unknown)} are not among the model's labels; their images are left out")
    reference = None
    if args.exclude_copies_of:
        reference = scan_paths([args.exclude_copies_of])
        if not len(reference):
            reason = reference.problems[0].reason if reference.problems else "no images"
            warn(f"--exclude-copies-of {args.exclude_copies_of}: {reason}")
            return 2
    # Every image is extracted (so a --meshes cache keeps them all); the copies are left out after.
    if not any(r.label in card.labels for r in dataset.records):
        warn(f"{args.data_dir}: no images to evaluate (its class folders are empty or hold no label of the model)")
        return 2
    table = extract(dataset, args.meshes, workers=args.workers, options=landmarker_options(args),
                    progress=not args.no_progress, other_rows="drop" if args.overwrite else "refuse-foreign",
                    engine=engine_from_args(args), output_option="--meshes")
    excluded = 0
    if reference is not None:
        copies = copies_of(table.paths, reference)
        excluded = int(copies.sum())
        table = table.subset(np.flatnonzero(~copies))
    metrics = evaluate_table(model, table)
    if args.exclude_copies_of:
        metrics["copies_excluded"] = excluded
    metrics["model"] = card.name
    metrics["data"] = str(args.data_dir)
    metrics["split"] = args.split
    if args.json:
        print_json(metrics)
    else:
        side = "" if args.split == "all" else f" (the {args.split} side of its fixed split: {len(dataset)} images)"
        print(f"model {card.name} on {args.data_dir}{side}")
        if args.exclude_copies_of:
            print(f"left out {excluded} images that are copies of images under {args.exclude_copies_of}")
        print(format_metrics(metrics))
    return 0
