"""Image augmentation: distorted and mirrored copies of the images of a folder.

Each copy is written beside its source as ``augmented_<name>`` (then ``augmented2_<name>``, ...;
see :func:`meshfer.datasets.augmented_name`), so that :func:`meshfer.datasets.group_of` ties it
to its source and a split never separates them. Existing files are never overwritten, augmented
images are never augmented again, and the same seed gives the same copies (each copy's random
draw depends only on the seed, the source's name and the copy number, not on what else exists).

The copies to make are a fixed plan: ``limit`` copies, the sources taken round-robin in name
order (copy 1 of every source, then copy 2, ...). A copy of the plan that exists already is not
made again, so running the same command twice writes nothing new, and a run cut short (Ctrl-C, a
crash, a full disk) is finished by running it again. Each copy is written to a temporary file and
renamed into place: a copy is either complete or absent. Images smaller than
:data:`MIN_SIDE` pixels on a side are skipped (the distortions need a few pixels to work on).

Needs Albumentations (a training extra), imported on first use.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import DISK_FULL_ERRNOS, check_writable, os_reason
from .datasets import augmented_name, is_augmented
from .errors import DatasetError, ImageReadError, ImageSizeError, OutputError
from .images import file_problem, is_image_file, read_image

__all__ = ["AugmentStats", "MIN_SIDE", "build_transform", "augment_image", "augment_folder", "augmented_tree"]

#: Images with a side shorter than this (pixels) are not augmented: Albumentations' grid and
#: optical distortions divide by zero below about 5 pixels.
MIN_SIDE = 8
_TEMP_PREFIX = ".augmented-tmp-"
_TEMP_RE = re.compile(r"^\.augmented-tmp-.*\.part$")


@dataclass
class AugmentStats:
    """What :func:`augment_folder` did."""

    written: list[Path] = field(default_factory=list)
    skipped_unreadable: list[Path] = field(default_factory=list)
    n_sources: int = 0
    already_there: list[Path] = field(default_factory=list)
    skipped_small: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        extra = f", {len(self.already_there)} already there" if self.already_there else ""
        small = f", {len(self.skipped_small)} too small skipped" if self.skipped_small else ""
        return (
            f"{len(self.written)} augmented copies written from {self.n_sources} source images"
            f" ({len(self.skipped_unreadable)} unreadable skipped{small}{extra})"
        )


def build_transform(seed: int | None = None) -> Any:
    """The augmentation pipeline: GridDistortion, OpticalDistortion and HorizontalFlip (Albumentations 2.x)."""
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.GridDistortion(num_steps=5, distort_limit=0.2, border_mode=cv2.BORDER_REFLECT_101, p=0.7),
            A.OpticalDistortion(distort_limit=0.15, border_mode=cv2.BORDER_REFLECT_101, p=0.7),
            A.HorizontalFlip(p=0.5),
        ],
        seed=seed,
    )


def _copy_seed(seed: int, name: str, copy: int) -> int:
    digest = hashlib.sha256(f"{seed}/{name}/{copy}".encode("utf-8", "surrogateescape")).digest()  # any file name
    return int.from_bytes(digest[:4], "little")


def augment_image(image: np.ndarray, seed: int, transform: Any | None = None) -> np.ndarray:
    """One augmented copy of an RGB (or grey) uint8 image, determined by ``seed``. Raises
    :class:`~meshfer.errors.ImageSizeError` (naming the size) for an image with a side shorter
    than :data:`MIN_SIDE` pixels, or an array that is not an image."""
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise ImageSizeError(f"not an image array (shape {shape}): expected (height, width) or (height, width, 3)")
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < MIN_SIDE:
        raise ImageSizeError(f"image too small to augment ({w}x{h} pixels; at least {MIN_SIDE} on each side)")
    transform = transform or build_transform()
    transform.set_random_seed(seed)
    return transform(image=image)["image"]


def _encode(image: np.ndarray, suffix: str) -> bytes:
    import cv2

    if image.ndim == 3 and np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]):
        image = image[..., 0]  # keep grey images grey (FER-2013)
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(suffix if suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff") else ".png", image)
    if not ok:
        raise ValueError(f"cannot encode image as {suffix}")
    return buf.tobytes()


def _write_new(target: Path, data: bytes) -> bool:
    """Write ``data`` as ``target`` atomically and without overwriting: a temporary file in the same
    folder, hard-linked into place (fails if ``target`` exists), then removed. False when ``target``
    appeared meanwhile. Raises OSError (the temporary file removed) when the folder cannot take it."""
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: rename, after one more look
            if target.exists():
                return False
            os.rename(tmp, target)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _remedy(exc: OSError) -> str:
    """What to do about a write error in the folder: by its cause, not always 'free some space'."""
    import errno

    again = "run the same command again to finish"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"the folder is not writable (permission denied): make it writable and {again}"
    if exc.errno == errno.EROFS:
        return "the folder is on a read-only file system: nothing can be written there"
    if exc.errno in DISK_FULL_ERRNOS:
        return f"free some space and {again}"
    return f"fix that and {again}"


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of a run that was killed before it could remove them."""
    for p in folder.iterdir():
        if _TEMP_RE.match(p.name):
            try:
                p.unlink()
            except OSError:
                pass


def augment_folder(
    folder: str | Path,
    limit: int | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> AugmentStats:
    """Make sure the folder holds the augmented copies of its images that ``limit`` asks for.

    ``limit`` is the number of copies (None: one per source image). Sources (every image not
    itself augmented, in name order) are taken round-robin: each gets a copy before any gets a
    second one, so ``limit`` larger than the number of sources balances a small class with
    second and third copies. A copy of this plan that is already there (from an earlier run) is
    kept and counts; so a second run writes nothing, and a run that was cut short is completed.
    Unreadable images and images too small to distort (:data:`MIN_SIDE`) are skipped with a
    one-line message (``log``, default stderr) and their copies go to the next sources. A folder
    that cannot take the copies (read-only, full) raises :class:`~meshfer.errors.OutputError`,
    with every copy made so far complete.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    log = log or (lambda message: print(message, file=sys.stderr))
    entries = sorted(p for p in folder.iterdir() if is_image_file(p) and not is_augmented(p) and not p.name.startswith("."))
    sources = [p for p in entries if p.is_file()]
    stats = AugmentStats(n_sources=len(sources))
    for p in entries:
        if not p.is_file():  # links to nowhere, FIFOs, folders named like images: said, not read
            log(f"skipped {p}: {file_problem(p) or 'not a regular file'}")
            stats.skipped_unreadable.append(p)
    if not sources:
        log(f"{folder}: no source images to augment")
        return stats
    total = len(sources) if limit is None else int(limit)
    if total <= 0:
        return stats
    _remove_stale_temporaries(folder)
    transform = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="img", desc=f"Augmenting {folder.name}")
    usable: list[Path] = []  # sources known to be usable, in order (fixed by round 1)
    done = 0
    copy = 0
    try:
        while done < total:
            copy += 1
            candidates = sources if copy == 1 else usable
            if copy > 1 and not usable:
                break
            done_before = done
            for source in candidates:
                if done >= total:
                    break
                target = source.parent / augmented_name(source, copy)
                if target.exists():  # made by an earlier run: part of the plan already
                    if copy == 1:
                        usable.append(source)
                    stats.already_there.append(target)
                    done += 1
                    if bar is not None:
                        bar.update(1)
                    continue
                try:
                    image = read_image(source)
                except ImageReadError as exc:
                    if copy == 1:
                        log(f"skipped {exc.path}: {exc.reason}")
                        stats.skipped_unreadable.append(source)
                    continue
                if min(image.shape[:2]) < MIN_SIDE:
                    if copy == 1:
                        h, w = image.shape[:2]
                        log(f"skipped {source}: too small to augment ({w}x{h} pixels; at least {MIN_SIDE} on each side)")
                        stats.skipped_small.append(source)
                    continue
                if copy == 1:
                    usable.append(source)
                if transform is None:
                    transform = build_transform()
                data = _encode(augment_image(image, _copy_seed(seed, source.name, copy), transform), source.suffix)
                try:
                    if not _write_new(target, data):
                        continue  # appeared meanwhile (another run): never overwritten
                except OSError as exc:
                    made = len(stats.written) + len(stats.already_there)
                    raise OutputError(
                        f"{folder}: cannot write {target.name} ({os_reason(exc)}); {made} of {total} copies are there, "
                        f"each complete; {_remedy(exc)}"
                    ) from None
                stats.written.append(target)
                done += 1
                if bar is not None:
                    bar.update(1)
            if copy > 1 and done == done_before:  # nothing could be added in a whole round
                break
    finally:
        if bar is not None:
            bar.close()
    return stats


def augmented_tree(
    dataset: Any,
    target: str | Path,
    limit_per_class: int | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, AugmentStats]:
    """Augment a read-only labelled data set without touching it: link its images into
    ``target/<prefix><label>/`` (symbolic links, or copies where links are impossible) and write
    the augmented copies there with :func:`augment_folder`. ``dataset`` is a
    :class:`meshfer.datasets.Dataset` (e.g. ``scan_dataset(root).limit(n)``). Each class folder
    ends up with ``limit_per_class`` augmented copies (None: one per image); copies already there
    count, so running it again writes nothing new. Returns the statistics per label. Group names of the copies
    (relative to ``target``) equal those of their sources (relative to the data set's root)."""
    import shutil

    target = Path(target)
    check_writable(target / ".augmented-tree", what="augmentation folder")
    stats: dict[str, AugmentStats] = {}
    for label in dataset.labels:
        records = [r for r in dataset.records if r.label == label and not is_augmented(r.path)]
        if not records:
            continue
        folder = target / records[0].path.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        for r in records:
            link = folder / r.path.name
            if not link.exists():
                try:
                    link.symlink_to(r.path.resolve())
                except OSError:
                    shutil.copy2(r.path, link)
        wanted = len(records) if limit_per_class is None else limit_per_class
        stats[label] = augment_folder(folder, wanted, seed, progress=progress, log=log)  # copies there count
    return stats
