"""meshfer sort: propose eye-state or mouth-state labels and copy images into label folders."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._common import landmarker_options, positive_int, print_json


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sort",
        parents=parents,
        help="sort images into eye-state or mouth-state label folders for review",
        description="Propose a label for the face in each image of SRC_DIR from MediaPipe's blendshape scores, "
        "with conservative thresholds, and COPY the image (never move, never overwrite) into DEST_DIR/eye_closed, "
        "eye_narrowed, eye_open, eye_wide (eyes: both eyes in that state) or DEST_DIR/mouth_closed, mouth_open; "
        "unclear images go to DEST_DIR/unsure. A CSV of the scores and decisions is written to "
        "DEST_DIR/sort-eyes.csv (or sort-mouth.csv; a numbered name if it exists). Images without a face or that "
        "cannot be read are reported in one line each and skipped. Review the folders, then train with "
        "'meshfer train eyes|mouth DEST_DIR'.",
    )
    p.add_argument("kind", choices=["eyes", "mouth"], help="what to sort by")
    p.add_argument("source", type=Path, metavar="SRC_DIR",
                   help="folder of images (searched recursively), or a data root of face_<label> folders")
    p.add_argument("dest", type=Path, metavar="DEST_DIR", nargs="?",
                   help="where the label folders are created (default, when run inside the meshfer repository: its "
                   "'Eye Closeness' or 'Mouth Closeness' folder, where the notebooks look for them)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="mesh cache folder (shared with 'meshfer extract/train'): re-runs are fast, and the copies' "
                   "meshes are cached too")
    p.add_argument("--workers", type=positive_int, metavar="N", help="worker processes for mesh extraction")
    p.add_argument("--limit-per-class", type=positive_int, metavar="N",
                   help="for a face_<label> root: sort a random sample of N images per folder")
    p.add_argument("--seed", type=int, default=0, help="random seed of --limit-per-class (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-image problem lines")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..sorting import sort_images

    if args.dest is None:
        from ..datapaths import LABEL_FOLDERS, repo_root
        from ..errors import MeshferError

        repo = repo_root(package=False)
        if repo is None:
            raise MeshferError(f"sort: DEST_DIR is required outside the meshfer repository "
                               f"(inside it, it defaults to its '{LABEL_FOLDERS[args.kind][0]}' folder)")
        args.dest = repo / LABEL_FOLDERS[args.kind][0]
    result = sort_images(
        args.kind, args.source, args.dest, cache_dir=args.cache_dir, per_class=args.limit_per_class, seed=args.seed,
        workers=args.workers, options=landmarker_options(args), progress=not args.quiet,
        **({"on_problem": None} if args.quiet else {}),  # default: one line per problem on stderr
    )
    copied = sum(1 for r in result.records if r["action"] == "copied")
    present = sum(1 for r in result.records if r["action"] == "already present")
    skipped = sum(1 for r in result.records if r["action"] == "skipped")
    if args.json:
        print_json({"kind": result.kind, "dest": str(result.dest), "csv": str(result.csv_path), "counts": result.counts,
                    "copied": copied, "already_present": present, "skipped": skipped, "rules": result.rules})
    else:
        print(f"sorted {len(result.records)} images into {result.dest} ({copied} copied, {present} already there, "
              f"{skipped} skipped)")
        for label, n in result.counts.items():
            print(f"  {label:<10} {n}")
        print(f"scores and decisions: {result.csv_path}")
    return 0
