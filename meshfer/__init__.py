"""meshfer: facial-expression recognition from MediaPipe face meshes.

Importing meshfer is cheap and has no side effects: submodules (and MediaPipe, ONNX Runtime,
TensorFlow) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# Public name -> submodule that defines it (loaded lazily on first access).
_EXPORTS = {
    "FaceLandmarker": "landmarks",
    "LandmarkerOptions": "landmarks",
    "FaceMesh": "landmarks",
    "RunningMode": "landmarks",
    "BLENDSHAPE_NAMES": "landmarks",
    "MeshTable": "meshtable",
    "extract_folder": "extract",
    "read_image": "images",
    "scan_dataset": "datasets",
    "resolve_landmarker": "assets",
    "analyze_video": "video",
    "VideoAnalyzer": "video",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'meshfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
