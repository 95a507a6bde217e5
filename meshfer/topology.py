"""The face mesh as a graph, and named landmark groups.

The connection lists are MediaPipe's ``FaceLandmarksConnections`` (the old ``mp.solutions``
constants are gone from MediaPipe 1.x), stored in ``meshfer/data/connections.json`` so that
features need no MediaPipe import; a test checks them against the installed MediaPipe.
Left and right are the subject's, as in MediaPipe's names (the subject's left eye is on the
right of an unmirrored photo).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import numpy as np

from .landmarks import BLENDSHAPE_NAMES, NUM_LANDMARKS

__all__ = [
    "NOSE_TIP",
    "FOREHEAD",
    "LEFT_IRIS_CENTER",
    "RIGHT_IRIS_CENTER",
    "connections",
    "mesh_edges",
    "adjacency",
    "eye_contour",
    "EYE_EAR_POINTS",
    "EYE_CORNERS",
    "INNER_LIPS",
    "MOUTH_CORNERS",
    "MOUTH_INNER_MID",
    "mirror_permutation",
    "blendshape_mirror_permutation",
]

NOSE_TIP = 4
FOREHEAD = 151
RIGHT_IRIS_CENTER = 468  # ring 469-472
LEFT_IRIS_CENTER = 473  # ring 474-477

#: The six points of the eye aspect ratio (Soukupova & Cech 2016): p1 corner, p2 p3 upper lid,
#: p4 corner, p5 p6 lower lid.
EYE_EAR_POINTS = {
    "left": (362, 385, 387, 263, 373, 380),
    "right": (33, 160, 158, 133, 153, 144),
}
EYE_CORNERS = {"left": (362, 263), "right": (33, 133)}

#: Inner lip contour as a closed polygon (upper lip left to right, then lower lip right to left).
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
MOUTH_CORNERS = (78, 308)
MOUTH_INNER_MID = (13, 14)


@lru_cache(maxsize=1)
def _data() -> dict:
    with resources.files("meshfer").joinpath("data/connections.json").open("r") as f:
        return json.load(f)


def connections(name: str) -> np.ndarray:
    """MediaPipe's connections of one group as an (E, 2) int array; ``name`` is e.g.
    'tesselation', 'left_eye', 'right_iris', 'lips', 'face_oval', 'contours'."""
    data = _data()
    if name not in data or name == "source":
        valid = ", ".join(k for k in sorted(data) if k != "source")
        raise KeyError(f"unknown connection group {name!r}; valid: {valid}")
    return np.asarray(data[name], dtype=np.int64).reshape(-1, 2)


@lru_cache(maxsize=1)
def mesh_edges() -> np.ndarray:
    """Undirected edges of the face-mesh graph, (E, 2) with i < j, sorted and unique.

    The face tessellation (468 points) plus the iris rings, and spokes from each iris centre to its
    ring so that every one of the 478 points is connected.
    """
    parts = [connections("tesselation"), connections("left_iris"), connections("right_iris")]
    for centre, ring in ((RIGHT_IRIS_CENTER, range(469, 473)), (LEFT_IRIS_CENTER, range(474, 478))):
        parts.append(np.array([(centre, r) for r in ring], dtype=np.int64))
    edges = np.sort(np.concatenate(parts), axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]
    out = np.unique(edges, axis=0)
    out.setflags(write=False)
    return out


def adjacency(self_loops: bool = False, dtype: type = np.float32) -> np.ndarray:
    """Dense symmetric (478, 478) 0/1 adjacency matrix of :func:`mesh_edges`."""
    a = np.zeros((NUM_LANDMARKS, NUM_LANDMARKS), dtype=dtype)
    e = mesh_edges()
    a[e[:, 0], e[:, 1]] = 1
    a[e[:, 1], e[:, 0]] = 1
    if self_loops:
        np.fill_diagonal(a, 1)
    return a


def _chain_to_loop(edges: np.ndarray) -> tuple[int, ...]:
    """Order the edges of a closed contour into a polygon (a cycle through every point once)."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    start = min(neighbours)
    loop, prev, cur = [start], None, start
    while True:
        nxt = [n for n in neighbours[cur] if n != prev]
        if not nxt or nxt[0] == start:
            break
        prev, cur = cur, nxt[0]
        loop.append(cur)
    return tuple(loop)


@lru_cache(maxsize=2)
def eye_contour(side: str) -> tuple[int, ...]:
    """The 16 points around one eye (``'left'`` or ``'right'``), in polygon order."""
    if side not in ("left", "right"):
        raise ValueError("side must be 'left' or 'right'")
    return _chain_to_loop(connections(f"{side}_eye"))


@lru_cache(maxsize=1)
def mirror_permutation() -> np.ndarray:
    """Index permutation P such that ``mirrored = landmarks[P]`` with x -> 1 - x describes the
    mirror image of a face (left and right landmarks swapped). P is an involution (P[P] = identity).

    Computed once from MediaPipe's canonical face model symmetry and stored in
    ``meshfer/data/mirror.json`` (see ``scripts/make_mirror.py``).
    """
    with resources.files("meshfer").joinpath("data/mirror.json").open("r") as f:
        perm = np.asarray(json.load(f)["permutation"], dtype=np.int64)
    perm.setflags(write=False)
    return perm


@lru_cache(maxsize=1)
def blendshape_mirror_permutation() -> np.ndarray:
    """Index permutation of the 52 blendshapes that swaps every ...Left with its ...Right."""
    index = {n: i for i, n in enumerate(BLENDSHAPE_NAMES)}
    perm = []
    for name in BLENDSHAPE_NAMES:
        if name.endswith("Left"):
            perm.append(index[name[:-4] + "Right"])
        elif name.endswith("Right"):
            perm.append(index[name[:-5] + "Left"])
        else:
            perm.append(index[name])
    out = np.asarray(perm, dtype=np.int64)
    out.setflags(write=False)
    return out
