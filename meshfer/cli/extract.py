"""meshfer extract: face meshes for a folder of images, cached in one output file."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_engine_options, engine_from_args, landmarker_options, positive_int, print_json, warn


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "extract",
        parents=parents,
        help="face meshes for every image of a data folder -> one .npz file",
        description="Find the face mesh (478 landmarks, 52 blendshapes, transformation matrix) of every image "
        "under DATA_DIR and save them in one .npz file. DATA_DIR holds face_<label> folders (labels come from "
        "the folder names) or is a plain folder of images. The output file doubles as a cache: a re-run "
        "processes only new or changed images, and an interrupted run keeps what it finished.",
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="folder of face_<label> sub-folders, or of images")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output .npz file (also the cache)")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="worker processes, or Ray actors with --engine ray (default: all cores / all CPUs of the cluster)")
    add_engine_options(p)
    p.add_argument("--prefix", default="face_", help="class folder prefix (default: face_)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output file that holds the meshes of other images (another data set) "
                   "instead of refusing")
    p.add_argument(
        "--split", choices=["all", "train", "validation"], default="all",
        help="extract only one side of the fixed split of DATA_DIR (a data root of class folders), the split "
        "'meshfer train' without --val and the notebooks use (see 'meshfer evaluate --help'); default: all images",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._io import output_lock

    with output_lock(args.output, what="mesh file"):  # before the scan: a second run on -o stops at once
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from ..datasets import scan_dataset, scan_paths
    from ..extract import ExtractStats, extract
    from pathlib import Path

    root = Path(args.data_dir)
    if args.split != "all":
        from ..datapaths import fixed_split

        dataset = fixed_split(root, prefix=args.prefix).dataset(args.split)
    elif _is_dir(root) and not any(c.is_dir() and c.name.startswith(args.prefix) for c in root.iterdir()):
        dataset = scan_paths([root])
    else:
        dataset = scan_dataset(root, args.prefix)
    for problem in dataset.problems:
        warn(f"skipped {problem}")
    stats = ExtractStats()
    try:
        table = extract(
            dataset, args.output, workers=args.workers, options=landmarker_options(args),
            prefix=args.prefix, progress=not args.no_progress, stats=stats,
            other_rows="drop" if args.overwrite else "refuse", engine=engine_from_args(args), output_option="-o",
        )
    except KeyboardInterrupt as exc:
        warn(f"interrupted: what was extracted is saved in {args.output}; run the same command again to go on")
        return 128 + getattr(exc, "signum", 2)
    summary = table.summary()
    summary["skipped"] = [{"file": p.path, "reason": p.reason} for p in dataset.problems]
    summary["output"] = str(args.output)
    summary["split"] = args.split
    summary["processed"] = stats.n_processed
    summary["cached"] = stats.n_cached
    summary["seconds"] = round(stats.wall_s, 2)
    summary["engine"] = stats.engine
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary))
    return 0


def _is_dir(path: Any) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name over the system's limit, ...: scan_dataset says why
        return False


def format_summary(summary: dict[str, Any]) -> str:
    """The per-class table printed at the end of an extraction."""
    rows = summary["per_class"]
    width = max([5, *(len(k) for k in rows)])
    lines = [f"{'class':<{width}} {'images':>7} {'faces':>7} {'no face':>8} {'unreadable':>11} {'coverage':>9}"]
    for label, r in rows.items():
        cov = f"{r['coverage']:.3f}" if r["coverage"] is not None else "-"
        lines.append(f"{label:<{width}} {r['images']:>7} {r['faces']:>7} {r['no_face']:>8} {r['unreadable']:>11} {cov:>9}")
    lines.append(
        f"{'total':<{width}} {summary['n_images']:>7} {summary['n_faces']:>7} "
        f"{sum(r['no_face'] for r in rows.values()):>8} {sum(r['unreadable'] for r in rows.values()):>11} "
        f"{summary['coverage']:>9.3f}"
    )
    lines.append(
        f"{summary['processed']} images processed, {summary['cached']} from the cache, "
        f"{summary['seconds']} s; saved to {summary['output']}"
    )
    if summary["failed"]:
        lines.append(f"{len(summary['failed'])} images without a face mesh (first 10):")
        lines += [f"  {f['file']}: {f['reason']}" for f in summary["failed"][:10]]
    return "\n".join(lines)
