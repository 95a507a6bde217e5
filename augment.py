"""Write augmented copies (grid and optical distortion, horizontal flip) of the images of a folder.

Two ways to use it:

1. edit FOLDER, LIMIT and SEED below and run ``python augment.py`` (from any folder: FOLDER is
   relative to the folder of this file, the repository root, where the quick start puts the data
   set's face_* folders);
2. pass them as arguments: ``python augment.py face_surprised --limit 3717 --seed 0`` (a folder
   given here is relative to the working directory, as usual).

Copies are written beside the originals as ``augmented_<name>`` (``augmented2_<name>``, ...);
nothing is overwritten and augmented images are never augmented again. LIMIT is the number of
copies the folder should hold (None: one per image); a LIMIT above the number of images gives some
images a second copy. Copies already there count, so running it again writes nothing new, and a
run that was cut short is finished by running it again. The work is done by
:func:`meshfer.augment.augment_folder`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FOLDER = "face_surprised"  # folder of images to augment (relative to this file's folder, the repository root)
LIMIT: int | None = None  # number of copies to write (None: one per source image)
SEED = 0  # same seed, same copies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = _default_folder()
    parser.add_argument("folder", nargs="?", type=Path, help=f"folder of images (default: FOLDER, {default})")
    parser.add_argument("--limit", type=int, default=LIMIT, help=f"copies the folder should hold (default: {LIMIT})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default: {SEED})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from meshfer.augment import augment_folder
    from meshfer.errors import MeshferError

    folder = default if args.folder is None else args.folder
    try:
        stats = augment_folder(folder, args.limit, args.seed, progress=not args.no_progress)
    except MeshferError as exc:
        hint = ""
        if args.folder is None and not folder.exists():
            hint = (f" (FOLDER = {FOLDER!r} is relative to {folder.parent}: extract the data set's face_* folders "
                    "there, or edit FOLDER, or pass a folder)")
        print(f"augment.py: error: {exc}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("augment.py: interrupted; the copies written are complete: run it again to finish", file=sys.stderr)
        return 130
    copies = "one per source image" if args.limit is None else f"{args.limit} in all"
    print(f"augment.py: {folder} (copies: {copies}, seed {args.seed}): {stats}")
    return 0


def _default_folder() -> Path:
    """FOLDER, relative to the folder of this file (the repository root) unless it is absolute."""
    folder = Path(FOLDER).expanduser()
    return folder if folder.is_absolute() else Path(__file__).resolve().parent / folder


if __name__ == "__main__":
    raise SystemExit(main())
