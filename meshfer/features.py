"""Feature sets: pure, vectorised NumPy functions of face meshes.

Every function takes an (N, 478, 3) landmark array (MediaPipe's normalised coordinates) and,
optionally, the (N, 2) image sizes as (width, height): with them the mesh is first put in an
isotropic frame (:func:`isotropic`), without them the images are taken to be square. All
geometric features are scaled by the nose-tip-to-forehead distance (landmarks 4 and 151), so they
do not depend on the face's size in the image. A degenerate mesh (all points equal, zero scale)
gives finite values, never NaN or inf; a NaN mesh (no face) gives NaN rows.

Feature sets used by the models are registered by name in :data:`FEATURE_SETS` and computed with
:func:`compute`; a model's manifest names its feature set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import topology
from .topology import FOREHEAD, NOSE_TIP

__all__ = [
    "EPS",
    "isotropic",
    "face_scale",
    "nose_relative",
    "distances_to_point",
    "blendshape_features",
    "graph_node_features",
    "mesh_adjacency",
    "eye_features",
    "EYE_FEATURE_NAMES",
    "mouth_features",
    "MOUTH_FEATURE_NAMES",
    "polygon_area",
    "mirror_landmarks",
    "mirror_blendshapes",
    "FeatureSet",
    "FEATURE_SETS",
    "register_feature_set",
    "compute",
]

#: Smallest scale used as a divisor; keeps degenerate meshes finite.
EPS = 1e-6


def _as_batch(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[2] != 3:
        raise ValueError(f"expected landmarks of shape (N, 478, 3), got {np.shape(landmarks)}")
    return lm


def isotropic(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Landmarks in a frame where x, y and z share one unit (the image width).

    MediaPipe normalises x by the width and y by the height; for a non-square image y is
    rescaled by height / width. Returns float32 (N, 478, 3); the input is not modified.
    """
    lm = _as_batch(landmarks).copy()
    if image_sizes is not None:
        sizes = np.asarray(image_sizes, dtype=np.float32).reshape(-1, 2)
        w = np.maximum(sizes[:, 0], 1.0)
        h = np.maximum(sizes[:, 1], 1.0)
        lm[:, :, 1] *= (h / w)[:, None]
    return lm


def face_scale(lm: np.ndarray) -> np.ndarray:
    """(N,) nose-tip (4) to forehead (151) distance of isotropic landmarks, at least EPS."""
    d = np.linalg.norm(lm[:, FOREHEAD] - lm[:, NOSE_TIP], axis=-1)
    return np.where(np.isnan(d), d, np.maximum(d, EPS))


def nose_relative(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """(a) Coordinates relative to the nose tip (4), divided by the nose-to-forehead distance.

    Returns (N, 1434): x0, y0, z0, x1, ... for the 478 landmarks.
    """
    lm = isotropic(landmarks, image_sizes)
    rel = (lm - lm[:, NOSE_TIP : NOSE_TIP + 1]) / face_scale(lm)[:, None, None]
    return rel.reshape(len(lm), -1)


def distances_to_point(
    landmarks: np.ndarray, image_sizes: np.ndarray | None = None, point: int = FOREHEAD
) -> np.ndarray:
    """(b) Distance of every landmark to landmark ``point`` (151), divided by the nose-to-forehead
    distance. Returns (N, 478)."""
    lm = isotropic(landmarks, image_sizes)
    d = np.linalg.norm(lm - lm[:, point : point + 1], axis=-1)
    return d / face_scale(lm)[:, None]


def blendshape_features(blendshapes: np.ndarray) -> np.ndarray:
    """(c) The 52 blendshape scores as float32 (N, 52)."""
    bs = np.asarray(blendshapes, dtype=np.float32)
    return bs[None] if bs.ndim == 1 else bs


def graph_node_features(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """(d) Node features of the face graph: (N, 478, 3) nose-relative, scale-normalised coordinates.
    Use with :func:`mesh_adjacency`."""
    return nose_relative(landmarks, image_sizes).reshape(-1, 478, 3)


def mesh_adjacency(self_loops: bool = False) -> np.ndarray:
    """(d) The (478, 478) symmetric adjacency of the face mesh: MediaPipe's tessellation plus the
    iris rings and spokes (see :func:`meshfer.topology.mesh_edges`)."""
    return topology.adjacency(self_loops=self_loops)


def polygon_area(points: np.ndarray) -> np.ndarray:
    """Area of polygons given as (..., K, 2+) vertex arrays (shoelace formula on x, y)."""
    x, y = points[..., 0], points[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1))


def _safe_ratio(num: np.ndarray, den: np.ndarray, cap: float) -> np.ndarray:
    """num / den, bounded by ``cap`` when den is (close to) zero, finite for finite input."""
    return np.where(np.isnan(den), np.nan, np.minimum(num / np.maximum(den, EPS), cap))


EYE_FEATURE_NAMES = ("area", "width_height_ratio", "aspect_ratio", "opening")


def eye_features(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """(e) Per-eye features, (N, 2, 4) for the subject's [left, right] eye, in
    :data:`EYE_FEATURE_NAMES` order:

    - ``area``: eye-opening polygon area (16 contour points) / nose-to-forehead distance squared;
    - ``width_height_ratio``: corner-to-corner width / mean lid-to-lid height (capped at 100);
    - ``aspect_ratio``: the eye aspect ratio (EAR) of Soukupova & Cech, (|p2-p6| + |p3-p5|) / 2|p1-p4|;
    - ``opening``: mean lid-to-lid height / nose-to-forehead distance.
    """
    lm = isotropic(landmarks, image_sizes)
    scale = face_scale(lm)
    out = np.empty((len(lm), 2, len(EYE_FEATURE_NAMES)), dtype=np.float32)
    for k, side in enumerate(("left", "right")):
        contour = lm[:, list(topology.eye_contour(side)), :2]
        p1, p2, p3, p4, p5, p6 = (lm[:, i, :2] for i in topology.EYE_EAR_POINTS[side])
        width = np.linalg.norm(p1 - p4, axis=-1)
        height = 0.5 * (np.linalg.norm(p2 - p6, axis=-1) + np.linalg.norm(p3 - p5, axis=-1))
        out[:, k, 0] = polygon_area(contour) / scale**2
        out[:, k, 1] = _safe_ratio(width, height, 100.0)
        out[:, k, 2] = _safe_ratio(height, width, 100.0)
        out[:, k, 3] = height / scale
    return out


MOUTH_FEATURE_NAMES = ("area", "width_height_ratio", "opening", "aspect_ratio")


def mouth_features(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """(f) Mouth features, (N, 4) in :data:`MOUTH_FEATURE_NAMES` order:

    - ``area``: inner-lip polygon area / nose-to-forehead distance squared;
    - ``width_height_ratio``: corner-to-corner width / inner-lip gap (13-14), capped at 100;
    - ``opening``: inner-lip gap / nose-to-forehead distance;
    - ``aspect_ratio``: inner-lip gap / mouth width (the mouth aspect ratio).
    """
    lm = isotropic(landmarks, image_sizes)
    scale = face_scale(lm)
    inner = lm[:, list(topology.INNER_LIPS), :2]
    a, b = topology.MOUTH_CORNERS
    u, d = topology.MOUTH_INNER_MID
    width = np.linalg.norm(lm[:, a, :2] - lm[:, b, :2], axis=-1)
    gap = np.linalg.norm(lm[:, u, :2] - lm[:, d, :2], axis=-1)
    out = np.empty((len(lm), len(MOUTH_FEATURE_NAMES)), dtype=np.float32)
    out[:, 0] = polygon_area(inner) / scale**2
    out[:, 1] = _safe_ratio(width, gap, 100.0)
    out[:, 2] = gap / scale
    out[:, 3] = _safe_ratio(gap, width, 100.0)
    return out


def mirror_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks of the horizontally mirrored image: x -> 1 - x and left/right points swapped."""
    lm = _as_batch(landmarks)[:, topology.mirror_permutation()].copy()
    lm[:, :, 0] = 1.0 - lm[:, :, 0]
    return lm


def mirror_blendshapes(blendshapes: np.ndarray) -> np.ndarray:
    """Blendshapes of the mirrored face: every ...Left score swapped with its ...Right."""
    return blendshape_features(blendshapes)[:, topology.blendshape_mirror_permutation()]


# --------------------------------------------------------------------------------------------------
# Named feature sets


@dataclass(frozen=True)
class FeatureSet:
    """A named feature computation: ``function(landmarks, blendshapes, image_sizes) -> (N, D)``."""

    name: str
    function: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
    description: str

    def __call__(self, landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
        return self.function(landmarks, blendshapes, image_sizes)


FEATURE_SETS: dict[str, FeatureSet] = {}


def register_feature_set(name: str, description: str) -> Callable:
    """Decorator adding a function to :data:`FEATURE_SETS`."""

    def wrap(fn: Callable) -> Callable:
        FEATURE_SETS[name] = FeatureSet(name, fn, description)
        return fn

    return wrap


def compute(name: str, landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Compute feature set ``name`` for a batch; KeyError lists the valid names."""
    try:
        fs = FEATURE_SETS[name]
    except KeyError:
        raise KeyError(f"unknown feature set {name!r}; valid: {', '.join(sorted(FEATURE_SETS))}") from None
    return np.asarray(fs(landmarks, blendshapes, image_sizes), dtype=np.float32)


@register_feature_set("nose_relative", "(a) 478x3 coordinates relative to the nose tip / nose-forehead distance (1434)")
def _fs_nose_relative(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return nose_relative(lm, sizes)


@register_feature_set("distances", "(b) distance of each landmark to the forehead point 151 / nose-forehead distance (478)")
def _fs_distances(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return distances_to_point(lm, sizes)


@register_feature_set("blendshapes", "(c) the 52 MediaPipe blendshape scores")
def _fs_blendshapes(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return blendshape_features(bs)


@register_feature_set("blendshapes_distances", "(c)+(b) blendshapes then distances to point 151 (52 + 478)")
def _fs_blendshapes_distances(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return np.concatenate([blendshape_features(bs), distances_to_point(lm, sizes)], axis=1)


@register_feature_set("eye", "(e) per-eye features, left eye then right eye: (N*2, 4) rows")
def _fs_eye(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return eye_features(lm, sizes).reshape(-1, len(EYE_FEATURE_NAMES))


@register_feature_set("mouth", "(f) mouth features (4)")
def _fs_mouth(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return mouth_features(lm, sizes)
