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
from functools import lru_cache
from typing import Callable, Iterable

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
    "compute_many",
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


def _norm(v: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last axis; several times faster than np.linalg.norm on the small
    arrays of one face, which matters per video frame."""
    return np.sqrt(np.einsum("...k,...k->...", v, v))


def isotropic(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Landmarks in a frame where x, y and z share one unit (the image width).

    MediaPipe normalises x by the width and y by the height; for a non-square image y is
    rescaled by height / width. Returns float32 (N, 478, 3); the input is not modified (without
    ``image_sizes`` it is returned as it is when already a float32 batch: treat it as read-only).
    """
    lm = _as_batch(landmarks)
    if image_sizes is not None:
        lm = lm.copy()
        sizes = np.asarray(image_sizes, dtype=np.float32).reshape(-1, 2)
        w = np.maximum(sizes[:, 0], 1.0)
        h = np.maximum(sizes[:, 1], 1.0)
        lm[:, :, 1] *= (h / w)[:, None]
    return lm


def face_scale(lm: np.ndarray) -> np.ndarray:
    """(N,) nose-tip (4) to forehead (151) distance of isotropic landmarks, at least EPS."""
    d = _norm(lm[:, FOREHEAD] - lm[:, NOSE_TIP])
    return np.where(np.isnan(d), d, np.maximum(d, EPS))


def _flat(x: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, prod(...)); unlike ``reshape(len(x), -1)`` this also works for N == 0."""
    return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))


def nose_relative(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """(a) Coordinates relative to the nose tip (4), divided by the nose-to-forehead distance.

    Returns (N, 1434): x0, y0, z0, x1, ... for the 478 landmarks.
    """
    lm = isotropic(landmarks, image_sizes)
    rel = (lm - lm[:, NOSE_TIP : NOSE_TIP + 1]) / face_scale(lm)[:, None, None]
    return _flat(rel)


def distances_to_point(
    landmarks: np.ndarray, image_sizes: np.ndarray | None = None, point: int = FOREHEAD
) -> np.ndarray:
    """(b) Distance of every landmark to landmark ``point`` (151), divided by the nose-to-forehead
    distance. Returns (N, 478)."""
    lm = isotropic(landmarks, image_sizes)
    d = _norm(lm - lm[:, point : point + 1])
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
    # The next vertex of each vertex; np.roll does the same but costs ~4x more on one small face,
    # which matters per video frame.
    xn = np.concatenate([x[..., 1:], x[..., :1]], axis=-1)
    yn = np.concatenate([y[..., 1:], y[..., :1]], axis=-1)
    return 0.5 * np.abs(np.sum(x * yn - xn * y, axis=-1))


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
        width = _norm(p1 - p4)
        height = 0.5 * (_norm(p2 - p6) + _norm(p3 - p5))
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
    width = _norm(lm[:, a, :2] - lm[:, b, :2])
    gap = _norm(lm[:, u, :2] - lm[:, d, :2])
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


def _feature_set(name: str) -> FeatureSet:
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise KeyError(f"unknown feature set {name!r}; valid: {', '.join(sorted(FEATURE_SETS))}") from None


def compute(name: str, landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Compute feature set ``name`` for a batch; KeyError lists the valid names."""
    return np.asarray(_feature_set(name)(landmarks, blendshapes, image_sizes), dtype=np.float32)


def compute_many(
    names: Iterable[str], landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Several feature sets of one batch, ``{name: (N, D) float32}``: the same values as
    :func:`compute`, with the isotropic frame made once for all of them (what every video frame
    needs for the four default models)."""
    sets = [_feature_set(name) for name in dict.fromkeys(names)]
    lm = isotropic(landmarks, image_sizes)
    bs = np.asarray(blendshapes, dtype=np.float32)
    return {fs.name: np.asarray(fs(lm, bs, None), dtype=np.float32) for fs in sets}


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


# --------------------------------------------------------------------------------------------------
# Companion models: eye state, mouth state and gaze (see meshfer.training.companions).
#
# MediaPipe's blendshape names use the subject's sides, like the landmark groups: eyeBlinkLeft
# belongs to the subject's left eye (landmarks 362/263, on the right of an unmirrored photo). On
# FER-2013 train, eyeBlinkLeft - eyeBlinkRight correlates at -0.40 with EAR(left) - EAR(right)
# (Eye Closeness/data.ipynb shows the check).

#: Per-eye blendshapes of the eye-state features ("Left"/"Right" is appended for each eye).
EYE_STATE_BLENDSHAPES = ("eyeBlink", "eyeSquint", "eyeWide", "eyeLookDown", "eyeLookUp")
EYE_STATE_GEOMETRY_NAMES = EYE_FEATURE_NAMES + ("iris_ratio", "brow_height")
EYE_STATE_FEATURE_NAMES = EYE_STATE_GEOMETRY_NAMES + tuple(f"{b}" for b in EYE_STATE_BLENDSHAPES)

#: Lower eyebrow line and upper-lid midpoint of each eye (subject's sides).
_BROW_LOWER = {"left": (276, 283, 282, 295, 285), "right": (46, 53, 52, 65, 55)}
_UPPER_LID_MID = {"left": 386, "right": 159}
_LOWER_LID_MID = {"left": 374, "right": 145}
_IRIS = {"left": (473, (474, 475, 476, 477)), "right": (468, (469, 470, 471, 472))}


def _blendshape_index(name: str) -> int:
    from .landmarks import BLENDSHAPE_NAMES

    return list(BLENDSHAPE_NAMES).index(name)


@lru_cache(maxsize=1)
def _eye_state_indices() -> dict[str, np.ndarray]:
    """Landmark and blendshape indices of both eyes ([left, right] on the first axis), so that
    the per-eye features are computed for both eyes at once (a few dozen NumPy calls per batch:
    this runs on every video frame)."""
    sides = ("left", "right")
    return {
        "contour": np.array([topology.eye_contour(s) for s in sides]),  # (2, 16)
        "ear": np.array([topology.EYE_EAR_POINTS[s] for s in sides]),  # (2, 6): p1..p6
        "iris": np.array([_IRIS[s][0] for s in sides]),  # (2,)
        "ring": np.array([_IRIS[s][1] for s in sides]),  # (2, 4)
        "brow": np.array([_BROW_LOWER[s] for s in sides]),  # (2, 5)
        "lid": np.array([_UPPER_LID_MID[s] for s in sides]),  # (2,)
        "blendshapes": np.array([[_blendshape_index(b + s) for b in EYE_STATE_BLENDSHAPES] for s in ("Left", "Right")]),
    }


def eye_state_features(
    landmarks: np.ndarray, blendshapes: np.ndarray | None = None, image_sizes: np.ndarray | None = None
) -> np.ndarray:
    """Per-eye state features, (N, 2, K) for the subject's [left, right] eye.

    Each eye is described in a side-independent way (distances, ratios and the eye's own
    blendshapes), so a right-eye row looks like the row of the mirrored left eye and one model
    serves both eyes. Columns (:data:`EYE_STATE_FEATURE_NAMES`): the four :func:`eye_features`
    (same values), ``iris_ratio`` (lid-to-lid height / iris diameter, capped at 100),
    ``brow_height`` (lower eyebrow line to upper-lid midpoint / nose-to-forehead distance) and,
    when ``blendshapes`` is given, the eye's eyeBlink, eyeSquint, eyeWide, eyeLookDown and
    eyeLookUp scores (K = 11; without blendshapes K = 6).
    """
    idx = _eye_state_indices()
    lm = isotropic(landmarks, image_sizes)
    xy = lm[:, :, :2]
    scale = face_scale(lm)[:, None]  # (N, 1): broadcasts over the two eyes
    p = xy[:, idx["ear"]]  # (N, 2, 6, 2)
    width = _norm(p[:, :, 0] - p[:, :, 3])
    height = 0.5 * (_norm(p[:, :, 1] - p[:, :, 5]) + _norm(p[:, :, 2] - p[:, :, 4]))
    diameter = 2.0 * _norm(xy[:, idx["ring"]] - xy[:, idx["iris"], None]).mean(axis=-1)
    brow = xy[:, idx["brow"]].mean(axis=2)
    cols = [
        polygon_area(xy[:, idx["contour"]]) / scale**2,
        _safe_ratio(width, height, 100.0),
        _safe_ratio(height, width, 100.0),
        height / scale,
        _safe_ratio(height, diameter, 100.0),
        _norm(brow - xy[:, idx["lid"]]) / scale,
    ]
    out = np.stack(cols, axis=-1).astype(np.float32, copy=False)
    if blendshapes is None:
        return out
    bs = blendshape_features(blendshapes)[:, idx["blendshapes"]]  # (N, 2, 5)
    return np.concatenate([out, bs], axis=2)


#: Mouth blendshapes of the mouth-state features (Left/Right pairs are averaged).
MOUTH_STATE_BLENDSHAPES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthUpperUp", "mouthLowerDown")
MOUTH_STATE_FEATURE_NAMES = MOUTH_FEATURE_NAMES + MOUTH_STATE_BLENDSHAPES


@lru_cache(maxsize=1)
def _mouth_state_weights() -> np.ndarray:
    """(52, 6) matrix taking the blendshapes to the mouth-state scores (pairs averaged)."""
    from .landmarks import BLENDSHAPE_NAMES

    w = np.zeros((len(BLENDSHAPE_NAMES), len(MOUTH_STATE_BLENDSHAPES)), dtype=np.float32)
    for j, name in enumerate(MOUTH_STATE_BLENDSHAPES):
        if name in BLENDSHAPE_NAMES:
            w[_blendshape_index(name), j] = 1.0
        else:
            w[_blendshape_index(name + "Left"), j] = 0.5
            w[_blendshape_index(name + "Right"), j] = 0.5
    w.setflags(write=False)
    return w


def mouth_state_features(landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Mouth-state features, (N, 10): the four :func:`mouth_features` then the jawOpen,
    mouthClose, mouthFunnel and mouthPucker scores and the means of mouthUpperUpLeft/Right and
    mouthLowerDownLeft/Right (:data:`MOUTH_STATE_FEATURE_NAMES`)."""
    scores = blendshape_features(blendshapes) @ _mouth_state_weights()
    return np.concatenate([mouth_features(landmarks, image_sizes), scores], axis=1)


_SIDES = ("left", "right")


def _eye_frames(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For both eyes ([left, right] on axis 1), in the image plane: centres (N, 2, 3), widths
    (N, 2), unit axes u (N, 2, 2; corner to corner, image left to right) and v (perpendicular,
    image downwards)."""
    corners = np.array([topology.EYE_CORNERS[s] for s in _SIDES])  # upright, unmirrored face: [image-left, image-right]
    pa, pb = lm[:, corners[:, 0]], lm[:, corners[:, 1]]
    centre = 0.5 * (pa + pb)
    d = pb[..., :2] - pa[..., :2]
    width = np.maximum(_norm(d), EPS)
    u = d / width[..., None]
    v = np.stack([-u[..., 1], u[..., 0]], axis=-1)
    return centre, width, u, v


def _in_eye_frames(points: np.ndarray, centre: np.ndarray, width: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 2, K, 2) coordinates of (N, 2, K, 3) points (K per eye) along each eye's (u, v) from its
    centre, in eye widths."""
    r = points[..., :2] - centre[:, :, None, :2]
    return np.stack([(r * u[:, :, None]).sum(-1), (r * v[:, :, None]).sum(-1)], axis=-1) / width[:, :, None, None]


def _head_pose_proxies(lm: np.ndarray, centre: np.ndarray, width: np.ndarray) -> np.ndarray:
    """(N, 7) head-pose cues from the eye frames: nose tip relative to the eyes' midpoint (x, y,
    z) and the depth difference of the eye centres, in inter-ocular distances; each eye's width /
    inter-ocular distance; chin-to-forehead depth difference (pitch)."""
    cl, cr = centre[:, 0], centre[:, 1]
    mid = 0.5 * (cl + cr)
    iod = np.maximum(_norm(cl[:, :2] - cr[:, :2]), EPS)
    nose = (lm[:, NOSE_TIP] - mid) / iod[:, None]
    return np.stack(
        [nose[:, 0], nose[:, 1], nose[:, 2], (cl[:, 2] - cr[:, 2]) / iod, width[:, 0] / iod, width[:, 1] / iod,
         (lm[:, 152, 2] - lm[:, 10, 2]) / iod],
        axis=1,
    )


@lru_cache(maxsize=1)
def _gaze_region_points() -> np.ndarray:
    """(2, 21): each eye's 16 contour points, iris centre and 4 iris-ring points."""
    return np.array([list(topology.eye_contour(s)) + [_IRIS[s][0], *_IRIS[s][1]] for s in _SIDES])


def gaze_eye_region_features(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Normalised eye-region landmarks for gaze, (N, 91): for each eye (subject's left, then
    right) its 16 contour points, iris centre and 4 iris-ring points as (u, v) coordinates in the
    eye's own frame (origin between the corners, u along the corner-to-corner line from the
    image's left to its right, unit = the eye's width), then 7 head-pose cues
    (:func:`_head_pose_proxies`). Image left/right are kept (not mirrored): gaze x is a direction
    in the image."""
    lm = isotropic(landmarks, image_sizes)
    centre, width, u, v = _eye_frames(lm)
    region = _flat(_in_eye_frames(lm[:, _gaze_region_points()], centre, width, u, v))
    return np.concatenate([region, _head_pose_proxies(lm, centre, width)], axis=1).astype(np.float32)


GAZE_IRIS_FEATURE_NAMES = ("iris_u", "iris_v", "upper_lid_v", "lower_lid_v", "iris_radius", "iris_between_lids", "iris_depth")


def gaze_iris_features(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Iris geometry for gaze, (N, 21): for each eye (subject's left, then right) the
    :data:`GAZE_IRIS_FEATURE_NAMES` - iris centre (u, v) in the eye's frame (see
    :func:`gaze_eye_region_features`), upper- and lower-lid midpoints' v, iris radius, the iris
    centre's place between the lids (0 upper lid, 1 lower lid; clipped to [-3, 3]) and the iris
    centre's depth relative to the eye centre, all in eye widths - then 7 head-pose cues."""
    lm = isotropic(landmarks, image_sizes)
    centre, width, u, v = _eye_frames(lm)
    iris = np.array([_IRIS[s][0] for s in _SIDES])
    ring = np.array([_IRIS[s][1] for s in _SIDES])
    pts = np.stack([iris, [_UPPER_LID_MID[s] for s in _SIDES], [_LOWER_LID_MID[s] for s in _SIDES]], axis=1)  # (2, 3)
    p = _in_eye_frames(lm[:, pts], centre, width, u, v)  # (N, 2, 3, 2)
    radius = _norm(lm[:, ring, :2] - lm[:, iris, None, :2]).mean(axis=-1) / width
    span = p[:, :, 2, 1] - p[:, :, 1, 1]
    between = np.clip((p[:, :, 0, 1] - p[:, :, 1, 1]) / np.where(np.abs(span) < EPS, EPS, span), -3.0, 3.0)
    depth = (lm[:, iris, 2] - centre[..., 2]) / width
    per_eye = np.stack([p[:, :, 0, 0], p[:, :, 0, 1], p[:, :, 1, 1], p[:, :, 2, 1], radius, between, depth], axis=-1)
    return np.concatenate([_flat(per_eye), _head_pose_proxies(lm, centre, width)], axis=1).astype(np.float32)


@register_feature_set("eye_state", "per-eye geometry + the eye's own blendshapes, left eye then right eye: (N*2, 11) rows")
def _fs_eye_state(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return eye_state_features(lm, bs, sizes).reshape(-1, len(EYE_STATE_FEATURE_NAMES))


@register_feature_set("eye_state_geometry", "per-eye geometry only, left eye then right eye: (N*2, 6) rows")
def _fs_eye_state_geometry(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return eye_state_features(lm, None, sizes).reshape(-1, len(EYE_STATE_GEOMETRY_NAMES))


@register_feature_set("mouth_state", "mouth geometry (4) + 6 mouth blendshape scores (10)")
def _fs_mouth_state(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return mouth_state_features(lm, bs, sizes)


@register_feature_set("gaze_eye_region", "eye contours and irises in each eye's frame + head-pose cues (91)")
def _fs_gaze_eye_region(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return gaze_eye_region_features(lm, sizes)


@register_feature_set("gaze_iris", "iris position relative to the eye corners and lids + head-pose cues (21)")
def _fs_gaze_iris(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return gaze_iris_features(lm, sizes)


# --------------------------------------------------------------------------------------------------
# GNN node features in the face's own frame (see meshfer.gnn).

#: Points that define the face frame: outer eye corners (subject's right, left), chin.
_FRAME_RIGHT_EYE, _FRAME_LEFT_EYE, _FRAME_CHIN = 33, 263, 152


def graph_node_features_aligned(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """(d') :func:`graph_node_features` turned into the face's own frame, (N, 478, 3): x from the
    subject's right outer eye corner (33) to the left one (263), y from the chin (152) towards the
    forehead (151) made orthogonal to x, z = x cross y. Head roll, yaw and pitch mostly drop out;
    what is left is the shape of the face. Mirroring commutes with it (mirrored landmarks give the
    left/right-swapped nodes with x negated)."""
    rel = graph_node_features(landmarks, image_sizes)
    x = rel[:, _FRAME_LEFT_EYE] - rel[:, _FRAME_RIGHT_EYE]
    x = x / np.maximum(_norm(x)[..., None], EPS)
    y = rel[:, FOREHEAD] - rel[:, _FRAME_CHIN]
    y = y - np.sum(y * x, axis=-1, keepdims=True) * x
    y = y / np.maximum(_norm(y)[..., None], EPS)
    frame = np.stack([x, y, np.cross(x, y)], axis=-1)  # columns: the frame's axes
    return np.einsum("npk,nkj->npj", rel, frame).astype(np.float32)


@register_feature_set("graph_aligned", "(d') 478x3 nose-relative coordinates in the face's own frame (eye line, chin-forehead) / nose-forehead distance (1434)")
def _fs_graph_aligned(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return _flat(graph_node_features_aligned(lm, sizes))


# --------------------------------------------------------------------------------------------------
# Expression models (see meshfer.training.expression): distances between key points.

#: 86 key points of the face: eyebrows (upper and lower line), eyelids and corners, nose bridge and
#: wings, outer and inner lips, chin and jaw, cheeks, forehead and the nasolabial folds.
EXPRESSION_KEYPOINTS = (
    70, 63, 105, 66, 107, 46, 53, 52, 65, 55,  # subject's right eyebrow
    300, 293, 334, 296, 336, 276, 283, 282, 295, 285,  # left eyebrow
    33, 133, 160, 159, 158, 144, 145, 153,  # right eye
    362, 263, 385, 386, 387, 373, 374, 380,  # left eye
    1, 4, 6, 168, 98, 327, 2,  # nose
    61, 291, 0, 17, 37, 267, 84, 314, 40, 270, 91, 321,  # outer lips
    78, 308, 13, 14, 82, 312, 87, 317,  # inner lips
    152, 148, 377, 172, 397, 234, 454, 132, 361,  # chin, jaw, face sides
    50, 280, 205, 425, 116, 345,  # cheeks
    10, 151, 9, 8,  # forehead, glabella
    129, 358, 203, 423,  # nasolabial folds
)


_KEYPOINT_INDEX = np.array(EXPRESSION_KEYPOINTS)


@lru_cache(maxsize=1)
def _keypoint_pairs() -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(len(EXPRESSION_KEYPOINTS), 1)


def keypoint_distances(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """Distances between every pair of :data:`EXPRESSION_KEYPOINTS` (3-D, isotropic frame), divided
    by the nose-to-forehead distance: (N, 3655), pairs in ``np.triu_indices`` order. Unlike
    distances to one point, they see how the brows, lids and lips move relative to each other."""
    lm = isotropic(landmarks, image_sizes)
    # Point differences, not a Gram matrix (|p|^2 + |q|^2 - 2 p.q, twice as fast): the pair
    # (4, 151) is the scale itself, and only the same arithmetic makes it exactly 1 on every face.
    # Noise of 1e-8 there would be scaled up to unit variance by the models' StandardScaler.
    i, j = _keypoint_pairs()
    points = lm[:, _KEYPOINT_INDEX]
    d = _norm(points[:, i] - points[:, j])
    return (d / face_scale(lm)[:, None]).astype(np.float32)


@register_feature_set("keypoint_distances", "distances between all pairs of 86 key points / nose-forehead distance (3655)")
def _fs_keypoint_distances(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return keypoint_distances(lm, sizes)


@register_feature_set("blendshapes_keypoints", "the 52 blendshapes then the 3655 key-point distances (3707)")
def _fs_blendshapes_keypoints(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return np.concatenate([blendshape_features(bs), keypoint_distances(lm, sizes)], axis=1)


def aligned_keypoints(landmarks: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
    """The :data:`EXPRESSION_KEYPOINTS` in the face's own frame (:func:`graph_node_features_aligned`),
    (N, 86 * 3): where the brows, lids, lips and jaw are, with the head's pose mostly taken out."""
    aligned = graph_node_features_aligned(landmarks, image_sizes)
    return _flat(aligned[:, _KEYPOINT_INDEX])


@register_feature_set("blendshapes_aligned_keypoints", "the 52 blendshapes then the 86 key points' aligned coordinates (310): the hybrid's mesh branch")
def _fs_blendshapes_aligned_keypoints(lm: np.ndarray, bs: np.ndarray, sizes: np.ndarray | None) -> np.ndarray:
    return np.concatenate([blendshape_features(bs), aligned_keypoints(lm, sizes)], axis=1)
