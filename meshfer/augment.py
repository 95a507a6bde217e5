"""Image augmentation: distorted and mirrored copies of the images of a folder.

Each copy is written beside its source as ``augmented_<name>`` (then ``augmented2_<name>``, ...;
see :func:`meshfer.datasets.augmented_name`), so that :func:`meshfer.datasets.group_of` ties it
to its source and a split never separates them. Existing files are never overwritten, augmented
images are never augmented again, and the same seed gives the same copies (each copy's random
draw depends only on the seed, the source's name and the copy number, not on what else exists).

Needs Albumentations (a training extra), imported on first use.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .datasets import augmented_name, is_augmented
from .errors import DatasetError, ImageReadError
from .images import is_image_file, read_image

__all__ = ["AugmentStats", "build_transform", "augment_image", "augment_folder", "augmented_tree"]


@dataclass
class AugmentStats:
    """What :func:`augment_folder` did."""

    written: list[Path] = field(default_factory=list)
    skipped_unreadable: list[Path] = field(default_factory=list)
    n_sources: int = 0

    def __str__(self) -> str:
        return (
            f"{len(self.written)} augmented copies written from {self.n_sources} source images"
            f" ({len(self.skipped_unreadable)} unreadable skipped)"
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
    digest = hashlib.sha256(f"{seed}/{name}/{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def augment_image(image: np.ndarray, seed: int, transform: Any | None = None) -> np.ndarray:
    """One augmented copy of an RGB (or grey) uint8 image, determined by ``seed``."""
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


def _next_copy(source: Path, start: int = 1) -> int:
    """The first copy number >= ``start`` whose file does not exist yet."""
    k = start
    while (source.parent / augmented_name(source, k)).exists():
        k += 1
    return k


def augment_folder(
    folder: str | Path,
    limit: int | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> AugmentStats:
    """Write augmented copies of the images in ``folder``.

    ``limit`` is the number of copies to write; None writes one copy per source image. Sources
    (every image not itself augmented, in name order) are taken round-robin: each gets a new
    copy before any gets another, so ``limit`` larger than the number of sources balances a small
    class with second and third copies. Each new copy takes the first free name, so nothing is
    overwritten. Unreadable images are skipped with a one-line message (``log``, default stderr).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    log = log or (lambda message: print(message, file=sys.stderr))
    sources = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not is_augmented(p))
    stats = AugmentStats(n_sources=len(sources))
    if not sources:
        log(f"{folder}: no source images to augment")
        return stats
    total = len(sources) if limit is None else int(limit)
    transform = build_transform()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="img", desc=f"Augmenting {folder.name}")
    usable = list(sources)
    round_ = 0
    try:
        while len(stats.written) < total and usable:
            round_ += 1
            for source in list(usable):
                if len(stats.written) >= total:
                    break
                try:
                    image = read_image(source)
                except ImageReadError as exc:
                    log(f"skipped {exc.path}: {exc.reason}")
                    stats.skipped_unreadable.append(source)
                    usable.remove(source)
                    continue
                copy = _next_copy(source, round_)
                target = source.parent / augmented_name(source, copy)
                data = _encode(augment_image(image, _copy_seed(seed, source.name, copy), transform), source.suffix)
                try:
                    with open(target, "xb") as f:  # "x": never overwrite, even in a race
                        f.write(data)
                except FileExistsError:
                    continue
                stats.written.append(target)
                if bar is not None:
                    bar.update(1)
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
        existing = sum(1 for p in folder.iterdir() if is_augmented(p))
        stats[label] = augment_folder(folder, max(wanted - existing, 0), seed, progress=progress, log=log)
    return stats
