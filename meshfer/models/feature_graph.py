"""Feature sets written as ONNX operators, so that a model file can read the raw mesh.

The NumPy functions of :mod:`meshfer.features` stay the reference (and the notebooks' tool); each
builder here appends to a graph the nodes that compute the same values from the inputs
``landmarks`` (N, 478, 3), ``blendshapes`` (N, 52) and ``image_sizes`` (N, 2) (width, height), and
returns the name of its (N, width) output. ``tests/test_feature_graph.py`` checks them against
NumPy on real meshes. Needs ``onnx`` to build; the built files run on ONNX Runtime alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..features import EPS, EXPRESSION_KEYPOINTS
from ..topology import FOREHEAD, NOSE_TIP

__all__ = ["GraphBuilder", "FEATURE_BUILDERS", "feature_graph_bytes", "RAW_INPUTS"]

#: The raw inputs of a feature graph: name, element shape after the batch axis.
RAW_INPUTS = (("landmarks", (478, 3)), ("blendshapes", (52,)), ("image_sizes", (2,)))

_FRAME_RIGHT_EYE, _FRAME_LEFT_EYE, _FRAME_CHIN = 33, 263, 152


@dataclass
class GraphBuilder:
    """Nodes and constants of a graph under construction, with unique names under ``prefix``."""

    prefix: str = "f"
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)
    _count: int = 0
    #: outputs of sub-graphs several feature sets share (the isotropic frame, the face's scale), by key
    shared: dict[tuple, str] = field(default_factory=dict)

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, value: Any, hint: str = "c", dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    # small helpers -----------------------------------------------------------------------------
    def gather(self, x: str, indices: Any, axis: int) -> str:
        return self.op("Gather", [x, self.const(indices, "idx", np.int64)], "gather", axis=axis)

    def norm(self, v: str) -> str:
        """Euclidean norm over the last axis, kept as a size-1 axis."""
        sq = self.op("Mul", [v, v])
        return self.op("Sqrt", [self.op("ReduceSum", [sq, self.const([-1], "axes", np.int64)], keepdims=1)])

    def at_least(self, x: str, eps: float) -> str:
        return self.op("Max", [x, self.const(eps, "eps")])


def isotropic(g: GraphBuilder, landmarks: str, image_sizes: str) -> str:
    """:func:`meshfer.features.isotropic`: y scaled by height / width (both at least 1); built once
    per graph, whichever feature sets ask for it."""
    key = ("isotropic", landmarks, image_sizes)
    if key not in g.shared:
        g.shared[key] = _isotropic(g, landmarks, image_sizes)
    return g.shared[key]


def _isotropic(g: GraphBuilder, landmarks: str, image_sizes: str) -> str:
    sizes = g.op("Max", [image_sizes, g.const(1.0, "one")])
    w = g.gather(sizes, [0], axis=1)  # (N, 1)
    h = g.gather(sizes, [1], axis=1)
    ratio = g.op("Div", [h, w])
    one = g.op("Div", [w, w])  # ones shaped (N, 1)
    scale = g.op("Concat", [one, ratio, one], axis=1)  # (N, 3)
    scale = g.op("Unsqueeze", [scale, g.const([1], "axes", np.int64)])  # (N, 1, 3)
    return g.op("Mul", [landmarks, scale])


def aligned_points(g: GraphBuilder, landmarks: str, image_sizes: str, points: Any) -> str:
    """:func:`meshfer.features.graph_node_features_aligned` of the landmarks ``points`` only:
    (N, len(points), 3), nose-relative, scaled by the nose-forehead distance, in the face's frame."""
    lm = isotropic(g, landmarks, image_sizes)
    nose = g.gather(lm, [NOSE_TIP], axis=1)  # (N, 1, 3)
    scale = _face_scale(g, lm)  # (N, 1, 1)
    frame_pts = g.gather(lm, [_FRAME_RIGHT_EYE, _FRAME_LEFT_EYE, FOREHEAD, _FRAME_CHIN], axis=1)
    rel_frame = g.op("Div", [g.op("Sub", [frame_pts, nose]), scale])  # (N, 4, 3)
    right, left, top, chin = (g.gather(rel_frame, [i], axis=1) for i in range(4))  # (N, 1, 3) each
    x = g.op("Sub", [left, right])
    x = g.op("Div", [x, g.at_least(g.norm(x), EPS)])
    y = g.op("Sub", [top, chin])
    proj = g.op("ReduceSum", [g.op("Mul", [y, x]), g.const([-1], "axes", np.int64)], keepdims=1)
    y = g.op("Sub", [y, g.op("Mul", [proj, x])])
    y = g.op("Div", [y, g.at_least(g.norm(y), EPS)])
    # z = x cross y, with the components rolled by Gather
    x1, x2 = g.gather(x, [1, 2, 0], axis=2), g.gather(x, [2, 0, 1], axis=2)
    y1, y2 = g.gather(y, [2, 0, 1], axis=2), g.gather(y, [1, 2, 0], axis=2)
    z = g.op("Sub", [g.op("Mul", [x1, y1]), g.op("Mul", [x2, y2])])
    frame = g.op("Concat", [x, y, z], axis=1)  # (N, 3 axes, 3 components)
    frame = g.op("Transpose", [frame], perm=[0, 2, 1])  # columns: the axes
    rel = g.op("Div", [g.op("Sub", [g.gather(lm, list(points), axis=1), nose]), scale])
    return g.op("MatMul", [rel, frame])


def flatten(g: GraphBuilder, x: str, width: int) -> str:
    return g.op("Reshape", [x, g.const([-1, width], "shape", np.int64)])


def blendshapes_aligned_keypoints(g: GraphBuilder, landmarks: str, blendshapes: str, image_sizes: str) -> str:
    """:func:`meshfer.features` ``blendshapes_aligned_keypoints`` (N, 310)."""
    points = aligned_points(g, landmarks, image_sizes, EXPRESSION_KEYPOINTS)
    return g.op("Concat", [blendshapes, flatten(g, points, 3 * len(EXPRESSION_KEYPOINTS))], axis=1)


def _xy(g: GraphBuilder, points: str) -> str:
    """The x, y components of points (..., 3)."""
    return g.op("Slice", [points, g.const([0], "s", np.int64), g.const([2], "e", np.int64), g.const([-1], "a", np.int64)])


def _face_scale(g: GraphBuilder, lm: str) -> str:
    """(N, 1, 1) nose-tip to forehead distance of isotropic landmarks, at least EPS (built once per graph)."""
    key = ("face_scale", lm)
    if key not in g.shared:
        d = g.op("Sub", [g.gather(lm, [FOREHEAD], axis=1), g.gather(lm, [NOSE_TIP], axis=1)])
        g.shared[key] = g.at_least(g.norm(d), EPS)
    return g.shared[key]


def _safe_ratio(g: GraphBuilder, num: str, den: str, cap: float) -> str:
    return g.op("Min", [g.op("Div", [num, g.at_least(den, EPS)]), g.const(cap, "cap")])


def _polygon_area(g: GraphBuilder, xy: str, indices: np.ndarray) -> str:
    """Shoelace area of the polygons ``xy[:, indices]`` (indices (..., K)); the polygon axes kept
    but the vertex axis summed: (N, ...) with a trailing size-1 axis."""
    idx = np.asarray(indices)
    pts = g.gather(xy, idx, axis=1)  # (N, ..., K, 2)
    nxt = g.gather(xy, np.concatenate([idx[..., 1:], idx[..., :1]], axis=-1), axis=1)
    last = idx.ndim + 1  # the coordinate axis
    x, y = g.gather(pts, [0], axis=last), g.gather(pts, [1], axis=last)
    xn, yn = g.gather(nxt, [0], axis=last), g.gather(nxt, [1], axis=last)
    cross = g.op("Sub", [g.op("Mul", [x, yn]), g.op("Mul", [xn, y])])  # (N, ..., K, 1)
    s = g.op("ReduceSum", [cross, g.const([idx.ndim], "axes", np.int64)], keepdims=0)  # (N, ..., 1)
    return g.op("Mul", [g.op("Abs", [s]), g.const(0.5, "half")])


def eye_state(g: GraphBuilder, landmarks: str, blendshapes: str, image_sizes: str) -> str:
    """:func:`meshfer.features.eye_state_features` as the ``eye_state`` rows: (N * 2, 11), the
    subject's left eye then right eye of each face."""
    from ..features import _eye_state_indices

    idx = _eye_state_indices()
    lm = isotropic(g, landmarks, image_sizes)
    xy = _xy(g, lm)
    scale = _face_scale(g, lm)  # (N, 1, 1): broadcasts over the eyes
    ear = idx["ear"]  # (2, 6)
    p = [g.gather(xy, ear[:, k], axis=1) for k in range(6)]  # (N, 2, 2) each
    width = g.norm(g.op("Sub", [p[0], p[3]]))  # (N, 2, 1)
    height = g.op("Mul", [g.op("Add", [g.norm(g.op("Sub", [p[1], p[5]])), g.norm(g.op("Sub", [p[2], p[4]]))]),
                          g.const(0.5, "half")])
    ring = g.gather(xy, idx["ring"], axis=1)  # (N, 2, 4, 2)
    iris = g.gather(xy, idx["iris"][:, None], axis=1)  # (N, 2, 1, 2)
    radius = g.op("ReduceMean", [g.norm(g.op("Sub", [ring, iris]))], axes=[2], keepdims=0)
    diameter = g.op("Mul", [radius, g.const(2.0, "two")])  # (N, 2, 1)
    brow = g.op("ReduceMean", [g.gather(xy, idx["brow"], axis=1)], axes=[2], keepdims=0)
    lid = g.gather(xy, idx["lid"], axis=1)  # (N, 2, 2)
    scale2 = g.op("Mul", [scale, scale])
    cols = [
        g.op("Div", [_polygon_area(g, xy, idx["contour"]), scale2]),
        _safe_ratio(g, width, height, 100.0),
        _safe_ratio(g, height, width, 100.0),
        g.op("Div", [height, scale]),
        _safe_ratio(g, height, diameter, 100.0),
        g.op("Div", [g.norm(g.op("Sub", [brow, lid])), scale]),
        g.gather(blendshapes, idx["blendshapes"], axis=1),  # (N, 2, 5)
    ]
    return g.op("Reshape", [g.op("Concat", cols, axis=2), g.const([-1, 11], "shape", np.int64)])


def mouth_state(g: GraphBuilder, landmarks: str, blendshapes: str, image_sizes: str) -> str:
    """:func:`meshfer.features.mouth_state_features` (N, 10)."""
    from .. import topology
    from ..features import _mouth_state_weights

    lm = isotropic(g, landmarks, image_sizes)
    xy = _xy(g, lm)
    scale = g.op("Reshape", [_face_scale(g, lm), g.const([-1, 1], "shape", np.int64)])  # (N, 1)
    a, b = topology.MOUTH_CORNERS
    u, d = topology.MOUTH_INNER_MID
    width = g.norm(g.op("Sub", [g.gather(xy, a, axis=1), g.gather(xy, b, axis=1)]))  # (N, 1)
    gap = g.norm(g.op("Sub", [g.gather(xy, u, axis=1), g.gather(xy, d, axis=1)]))
    area = _polygon_area(g, xy, np.array(topology.INNER_LIPS))  # (N, 1)
    cols = [
        g.op("Div", [area, g.op("Mul", [scale, scale])]),
        _safe_ratio(g, width, gap, 100.0),
        g.op("Div", [gap, scale]),
        _safe_ratio(g, gap, width, 100.0),
        g.op("MatMul", [blendshapes, g.const(_mouth_state_weights(), "w")]),
    ]
    return g.op("Concat", cols, axis=1)


def gaze_eye_region(g: GraphBuilder, landmarks: str, blendshapes: str, image_sizes: str) -> str:
    """:func:`meshfer.features.gaze_eye_region_features` (N, 91)."""
    from .. import topology
    from ..features import _gaze_region_points

    lm = isotropic(g, landmarks, image_sizes)
    corners = np.array([topology.EYE_CORNERS[s] for s in ("left", "right")])
    pa, pb = g.gather(lm, corners[:, 0], axis=1), g.gather(lm, corners[:, 1], axis=1)  # (N, 2, 3)
    centre = g.op("Mul", [g.op("Add", [pa, pb]), g.const(0.5, "half")])
    d = _xy(g, g.op("Sub", [pb, pa]))  # (N, 2, 2)
    width = g.at_least(g.norm(d), EPS)  # (N, 2, 1)
    u = g.op("Div", [d, width])
    v = g.op("Mul", [g.gather(u, [1, 0], axis=2), g.const([-1.0, 1.0], "sign")])
    # each eye's points in its (u, v) frame, in eye widths
    pts = _xy(g, g.gather(lm, _gaze_region_points(), axis=1))  # (N, 2, 21, 2)
    axis1 = g.const([2], "axes", np.int64)
    r = g.op("Sub", [pts, g.op("Unsqueeze", [_xy(g, centre), axis1])])
    ru = g.op("ReduceSum", [g.op("Mul", [r, g.op("Unsqueeze", [u, axis1])]), g.const([-1], "axes", np.int64)], keepdims=1)
    rv = g.op("ReduceSum", [g.op("Mul", [r, g.op("Unsqueeze", [v, axis1])]), g.const([-1], "axes", np.int64)], keepdims=1)
    region = g.op("Div", [g.op("Concat", [ru, rv], axis=3), g.op("Unsqueeze", [width, axis1])])
    region = flatten(g, region, 84)
    # head-pose cues (features._head_pose_proxies)
    cl, cr = g.gather(centre, 0, axis=1), g.gather(centre, 1, axis=1)  # (N, 3)
    mid = g.op("Mul", [g.op("Add", [cl, cr]), g.const(0.5, "half")])
    iod = g.at_least(g.norm(_xy(g, g.op("Sub", [cl, cr]))), EPS)  # (N, 1)
    nose = g.op("Div", [g.op("Sub", [g.gather(lm, NOSE_TIP, axis=1), mid]), iod])  # (N, 3)
    z = lambda x: g.gather(x, [2], axis=-1)  # noqa: E731
    w = g.op("Reshape", [width, g.const([-1, 2], "shape", np.int64)])
    cues = [
        nose,
        g.op("Div", [g.op("Sub", [z(cl), z(cr)]), iod]),
        g.op("Div", [w, iod]),
        g.op("Div", [g.op("Sub", [z(g.gather(lm, 152, axis=1)), z(g.gather(lm, 10, axis=1))]), iod]),
    ]
    return g.op("Concat", [region, *cues], axis=1)


#: feature set name -> builder(graph, landmarks, blendshapes, image_sizes) -> output name
FEATURE_BUILDERS: dict[str, Callable[[GraphBuilder, str, str, str], str]] = {
    "blendshapes_aligned_keypoints": blendshapes_aligned_keypoints,
    "eye_state": eye_state,
    "mouth_state": mouth_state,
    "gaze_eye_region": gaze_eye_region,
}


def _input(name: str, shape: tuple[int, ...]) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])


def feature_graph_bytes(feature_sets: list[str], opset: int = 17) -> bytes:
    """An ONNX model computing ``feature_sets`` from the raw inputs (:data:`RAW_INPUTS`); one output
    per feature set, named as it."""
    from onnx import TensorProto, helper

    unknown = [f for f in feature_sets if f not in FEATURE_BUILDERS]
    if unknown:
        raise KeyError(f"no ONNX graph for feature set(s) {', '.join(unknown)}; have {', '.join(FEATURE_BUILDERS)}")
    g = GraphBuilder()
    outputs = []
    for fs in feature_sets:
        out = FEATURE_BUILDERS[fs](g, "landmarks", "blendshapes", "image_sizes")
        g.nodes.append(helper.make_node("Identity", [out], [fs], name=f"{fs}/out"))
        outputs.append(helper.make_tensor_value_info(fs, TensorProto.FLOAT, ["N", None]))
    graph = helper.make_graph(g.nodes, "meshfer_features", [_input(n, s) for n, s in RAW_INPUTS], outputs,
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="meshfer")
    return model.SerializeToString()
