"""Write augmented copies (grid and optical distortion, horizontal flip) of the images of a folder.

Two ways to use it:

1. edit FOLDER, LIMIT and SEED below and run ``python augment.py``;
2. pass them as arguments: ``python augment.py face_surprised --limit 3717 --seed 0``.

Copies are written beside the originals as ``augmented_<name>`` (``augmented2_<name>``, ...);
nothing is overwritten and augmented images are never augmented again. LIMIT is the number of
copies to write (None: one per image); a LIMIT above the number of images gives some images a
second copy. The work is done by :func:`meshfer.augment.augment_folder`.
"""

from __future__ import annotations

import argparse
import sys

FOLDER = "face_surprised"  # folder of images to augment
LIMIT: int | None = None  # number of copies to write (None: one per source image)
SEED = 0  # same seed, same copies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=FOLDER, help=f"folder of images (default: {FOLDER})")
    parser.add_argument("--limit", type=int, default=LIMIT, help=f"copies to write (default: {LIMIT})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default: {SEED})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from meshfer.augment import augment_folder
    from meshfer.errors import MeshferError

    try:
        stats = augment_folder(args.folder, args.limit, args.seed, progress=not args.no_progress)
    except MeshferError as exc:
        print(f"augment.py: error: {exc}", file=sys.stderr)
        return 2
    print(stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
