"""Exceptions raised by meshfer. Every message names the file or folder concerned and the reason."""

from __future__ import annotations

__all__ = [
    "MeshferError",
    "ImageReadError",
    "ImageSizeError",
    "DatasetError",
    "LandmarkerModelError",
    "ModelError",
    "UnknownModelError",
    "OutputError",
    "Terminated",
]


class MeshferError(Exception):
    """Base class of every error meshfer raises on purpose."""


class ImageReadError(MeshferError):
    """An image file could not be read or decoded."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageSizeError(MeshferError, ValueError):
    """An image (an array) whose size does not suit the operation, e.g. too small to augment."""


class DatasetError(MeshferError):
    """A data root or class folder is missing or unusable."""


class LandmarkerModelError(MeshferError):
    """The MediaPipe face landmarker model file is missing, corrupt or cannot be fetched."""


class ModelError(MeshferError):
    """A meshfer model file (classifier or regressor) is missing, corrupt or inconsistent."""


class UnknownModelError(ModelError, KeyError):
    """A model name that the registry does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OutputError(MeshferError):
    """An output file or folder cannot be written (read-only, full disk, not a folder, ...)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) received: handled like Ctrl-C, so that work done so far is saved."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"terminated by signal {signum}")
