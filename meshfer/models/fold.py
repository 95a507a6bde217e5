"""Compact ONNX graphs for scaler -> PCA -> soft vote of MLPs pipelines.

skl2onnx writes such a pipeline node by node: the scaler, the PCA and every layer of every MLP
become separate operators (69 for the default expression model), each with a fixed cost per call
that dominates on one face per video frame. The same function is a handful of matrix products:

- the scaler and the PCA are one affine map, ``(x - m) @ A + c`` (folded in float64, stored in
  float32);
- the first layers of all members read the same input, so they become one wide matrix;
- deeper layers are block-diagonal, one block per member;
- each member's softmax is taken over its own slice of the output and the members are averaged.

:func:`folded_onnx_bytes` returns None for anything else, and the caller falls back to skl2onnx.
The export check in :func:`meshfer.models.export.save_onnx_model` compares the result with
scikit-learn either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["folded_onnx_bytes"]


def _members(vote: Any) -> list[Any] | None:
    """The fitted MLPs of an unweighted soft vote (or a lone MLP), or None when not foldable."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.neural_network import MLPClassifier

    if isinstance(vote, MLPClassifier):
        members = [vote]
    elif isinstance(vote, VotingClassifier) and vote.voting == "soft" and vote.weights is None:
        members = list(vote.estimators_)
    else:
        return None
    if not members or not all(isinstance(m, MLPClassifier) for m in members):
        return None
    first = members[0]
    shapes = [tuple(w.shape for w in first.coefs_)]
    for m in members:
        if (
            m.activation != "relu"
            or m.out_activation_ != "softmax"
            or tuple(w.shape for w in m.coefs_) != shapes[0]
            or not np.array_equal(m.classes_, first.classes_)
        ):
            return None
    return members


def _affine(steps: list[Any], n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(m, A, c) with ``transform(x) == (x - m) @ A + c`` for StandardScaler / PCA steps, or None.

    ``m`` is the training mean: subtracting it before the product keeps float32 exact where a
    feature barely varies (a tiny scale gives huge entries in A, which would multiply the raw
    values and cancel against c)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    a = np.eye(n_features)
    c = np.zeros(n_features)
    for step in steps:
        if isinstance(step, StandardScaler):
            mean = step.mean_ if step.with_mean else 0.0
            scale = step.scale_ if step.with_std else np.ones(a.shape[1])
            a, c = a / scale, (c - mean) / scale
        elif isinstance(step, PCA) and not step.whiten:
            w = step.components_.T
            a, c = a @ w, (c - step.mean_) @ w
        else:
            return None
    first = steps[0] if steps else None
    m = np.asarray(getattr(first, "mean_", np.zeros(n_features)), dtype=np.float64).reshape(-1)
    if m.shape != (n_features,):
        m = np.zeros(n_features)
    return m, a, c + m @ a


def folded_onnx_bytes(estimator: Any, n_features: int) -> bytes | None:
    """The compact float32 ONNX graph of a Pipeline (StandardScaler, PCA)* -> MLPClassifier or
    unweighted soft VotingClassifier of MLPs with equal shapes; None for any other estimator.
    Outputs ``label`` (class index, int64) and ``probabilities`` (N, C)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not hasattr(estimator, "steps"):
        return None
    members = _members(estimator.steps[-1][1])
    affine = _affine([s for _, s in estimator.steps[:-1]], n_features)
    if members is None or affine is None:
        return None
    classes = members[0].classes_
    if not np.array_equal(classes, np.arange(len(classes))):
        return None
    k, n_classes = len(members), len(classes)

    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def dense(x: str, w: np.ndarray, b: np.ndarray, out: str) -> str:
        nodes.append(helper.make_node("MatMul", [x, const(f"{out}_w", w)], [f"{out}_mm"]))
        nodes.append(helper.make_node("Add", [f"{out}_mm", const(f"{out}_b", b)], [out]))
        return out

    m, a, c = affine
    nodes.append(helper.make_node("Sub", ["X", const("input_mean", m)], ["centred"]))
    h = dense("centred", a, c, "reduced")
    n_layers = len(members[0].coefs_)
    for layer in range(n_layers):
        ws = [m.coefs_[layer] for m in members]
        bs = np.concatenate([m.intercepts_[layer] for m in members])
        if layer == 0:
            w = np.concatenate(ws, axis=1)  # every member reads the same input
        else:
            w = np.zeros((sum(x.shape[0] for x in ws), sum(x.shape[1] for x in ws)))
            r = q = 0
            for x in ws:
                w[r : r + x.shape[0], q : q + x.shape[1]] = x
                r, q = r + x.shape[0], q + x.shape[1]
        h = dense(h, w, bs, f"layer{layer}")
        if layer < n_layers - 1:
            nodes.append(helper.make_node("Relu", [h], [f"{h}_relu"]))
            h = f"{h}_relu"
    shape = numpy_helper.from_array(np.array([-1, k, n_classes], dtype=np.int64), "member_shape")
    inits.append(shape)
    nodes += [
        helper.make_node("Reshape", [h, "member_shape"], ["member_logits"]),
        helper.make_node("Softmax", ["member_logits"], ["member_proba"], axis=-1),
        helper.make_node("ReduceMean", ["member_proba"], ["probabilities"], axes=[1], keepdims=0),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "folded_pipeline",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, n_classes]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="meshfer")
    onnx.checker.check_model(model)
    return model.SerializeToString()
