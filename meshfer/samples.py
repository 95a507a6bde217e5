"""The sample photos shipped in the package (``meshfer/data/samples/``, licence in its README)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["samples_dir", "sample_images"]

_SUFFIXES = (".jpg", ".jpeg", ".png")


def samples_dir() -> Path:
    """The samples' data root: one ``face_<label>`` folder per class."""
    return Path(__file__).resolve().parent / "data" / "samples"


def sample_images() -> list[Path]:
    """The sample photos, sorted by class folder and name."""
    return sorted(p for p in samples_dir().glob("face_*/*") if p.suffix.lower() in _SUFFIXES)
