"""A small Keras-to-ONNX converter for the layers the hybrid network uses.

General converters (tf2onnx) pin old NumPy and protobuf releases; the hybrid network needs only a
dozen layer types, so this module writes their ONNX graph directly with ``onnx.helper``:
InputLayer, Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Add, MaxPooling2D,
GlobalAveragePooling2D, Normalization, Dense (linear, relu or softmax), Dropout (identity) and
Concatenate. Image tensors are NHWC in Keras and NCHW in ONNX; the ``crop`` input keeps Keras'
(N, H, W, 1) shape and is turned once at the start. Unknown layers raise ModelError naming them,
and :func:`keras_to_onnx_bytes`'s caller checks the exported graph against Keras on real inputs.
Needs ``onnx`` (the training extras), not TensorFlow's own converters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["keras_to_onnx_bytes", "average_onnx_bytes", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = (
    "InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add", "MaxPooling2D",
    "GlobalAveragePooling2D", "Normalization", "Dense", "Dropout", "Concatenate", "Activation",
)


def _inbound(layer: Any) -> list[str]:
    node = layer._inbound_nodes[0]
    inbound = node.inbound_layers
    if not isinstance(inbound, (list, tuple)):
        inbound = [inbound]
    return [lyr.name for lyr in inbound]


def _pads_same(layer: Any) -> str:
    return "SAME_UPPER" if layer.padding == "same" else "VALID"


def keras_to_onnx_bytes(model: Any, opset: int = 17) -> bytes:
    """The serialized ONNX graph of a functional Keras 2 model made of :data:`SUPPORTED_LAYERS`.

    Inputs keep the Keras input names and shapes (batch dimension free); the single output is
    named ``probabilities``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    inputs: list[Any] = []
    rank: dict[str, int] = {}  # tensor name -> 4 (NCHW image) or 2 (N, C)

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def activation(name: str, src: str, kind: str) -> str:
        if kind in ("linear", None):
            return src
        op = {"relu": "Relu", "softmax": "Softmax", "sigmoid": "Sigmoid"}.get(kind)
        if op is None:
            raise ModelError(f"layer {name}: activation {kind!r} is not supported by the ONNX export")
        out = f"{name}_{kind}"
        attrs = {"axis": -1} if op == "Softmax" else {}
        nodes.append(helper.make_node(op, [src], [out], name=out, **attrs))
        return out

    out_of: dict[str, str] = {}
    for layer in model.layers:
        kind = type(layer).__name__
        name = layer.name
        if kind == "InputLayer":
            shape = list(layer.input_shape[0] if isinstance(layer.input_shape, list) else layer.input_shape)[1:]
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape]))
            if len(shape) == 3:  # NHWC -> NCHW
                t = f"{name}_nchw"
                nodes.append(helper.make_node("Transpose", [name], [t], perm=[0, 3, 1, 2], name=t))
                out_of[name], rank[t] = t, 4
            else:
                out_of[name], rank[name] = name, 2
            continue
        if kind not in SUPPORTED_LAYERS:
            raise ModelError(f"layer {name} ({kind}) is not supported by the ONNX export")
        srcs = [out_of[n] for n in _inbound(layer)]
        src = srcs[0]
        out = name
        if kind == "Conv2D":
            kernel = layer.kernel.numpy().transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
            args = [src, const(f"{name}_w", kernel)]
            if layer.use_bias:
                args.append(const(f"{name}_b", layer.bias.numpy()))
            nodes.append(helper.make_node("Conv", args, [f"{name}_conv"], name=name, kernel_shape=list(layer.kernel_size),
                                          strides=list(layer.strides), auto_pad=_pads_same(layer),
                                          dilations=list(layer.dilation_rate), group=1))
            out = activation(name, f"{name}_conv", layer.activation.__name__)
        elif kind == "DepthwiseConv2D":
            if layer.depth_multiplier != 1:
                raise ModelError(f"layer {name}: depth_multiplier {layer.depth_multiplier} is not supported")
            kernel = layer.depthwise_kernel.numpy().transpose(2, 3, 0, 1)  # (kh, kw, c, 1) -> (c, 1, kh, kw)
            args = [src, const(f"{name}_w", kernel)]
            if layer.use_bias:
                args.append(const(f"{name}_b", layer.bias.numpy()))
            nodes.append(helper.make_node("Conv", args, [f"{name}_conv"], name=name, kernel_shape=list(layer.kernel_size),
                                          strides=list(layer.strides), auto_pad=_pads_same(layer),
                                          dilations=list(layer.dilation_rate), group=int(kernel.shape[0])))
            out = activation(name, f"{name}_conv", layer.activation.__name__)
        elif kind == "BatchNormalization":
            c = layer.moving_mean.shape[0]
            gamma = layer.gamma.numpy() if layer.scale else np.ones(c)
            beta = layer.beta.numpy() if layer.center else np.zeros(c)
            scale = gamma / np.sqrt(layer.moving_variance.numpy() + layer.epsilon)
            shift = beta - layer.moving_mean.numpy() * scale
            shape = (1, c, 1, 1) if rank[src] == 4 else (1, c)
            nodes.append(helper.make_node("Mul", [src, const(f"{name}_scale", scale.reshape(shape))], [f"{name}_mul"], name=f"{name}_mul"))
            nodes.append(helper.make_node("Add", [f"{name}_mul", const(f"{name}_shift", shift.reshape(shape))], [out], name=name))
        elif kind == "Normalization":
            mean = np.asarray(layer.mean).reshape(1, -1)
            std = np.sqrt(np.asarray(layer.variance).reshape(1, -1))
            nodes.append(helper.make_node("Sub", [src, const(f"{name}_mean", mean)], [f"{name}_sub"], name=f"{name}_sub"))
            nodes.append(helper.make_node("Div", [f"{name}_sub", const(f"{name}_std", np.maximum(std, 1e-7))], [out], name=name))
        elif kind == "ReLU":
            if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
                raise ModelError(f"layer {name}: only a plain ReLU is supported")
            nodes.append(helper.make_node("Relu", [src], [out], name=name))
        elif kind == "Activation":
            out = activation(name, src, layer.activation.__name__)
        elif kind == "Add":
            acc = srcs[0]
            for k, other in enumerate(srcs[1:]):
                nxt = out if k == len(srcs) - 2 else f"{name}_{k}"
                nodes.append(helper.make_node("Add", [acc, other], [nxt], name=nxt))
                acc = nxt
        elif kind == "MaxPooling2D":
            nodes.append(helper.make_node("MaxPool", [src], [out], name=name, kernel_shape=list(layer.pool_size),
                                          strides=list(layer.strides), auto_pad=_pads_same(layer)))
        elif kind == "GlobalAveragePooling2D":
            nodes.append(helper.make_node("GlobalAveragePool", [src], [f"{name}_gap"], name=f"{name}_gap"))
            nodes.append(helper.make_node("Flatten", [f"{name}_gap"], [out], name=name, axis=1))
            rank[out] = 2
        elif kind == "Dense":
            args = [src, const(f"{name}_w", layer.kernel.numpy())]
            args.append(const(f"{name}_b", layer.bias.numpy() if layer.use_bias else np.zeros(layer.units)))
            nodes.append(helper.make_node("Gemm", args, [f"{name}_gemm"], name=name))
            out = activation(name, f"{name}_gemm", layer.activation.__name__)
        elif kind == "Dropout":
            out = src  # identity at inference
        elif kind == "Concatenate":
            if any(rank[s] != 2 for s in srcs):
                raise ModelError(f"layer {name}: only (N, C) tensors can be concatenated")
            nodes.append(helper.make_node("Concat", srcs, [out], name=name, axis=1))
        rank.setdefault(out, rank[src])
        out_of[name] = out

    final = out_of[model.layers[-1].name]
    nodes.append(helper.make_node("Identity", [final], ["probabilities"], name="output"))
    graph = helper.make_graph(
        nodes, model.name, inputs,
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", int(model.output_shape[-1])])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="meshfer")
    onnx_model.ir_version = min(onnx_model.ir_version, 9)
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


def average_onnx_bytes(members: list[bytes]) -> bytes:
    """One ONNX graph that runs every member graph (made by :func:`keras_to_onnx_bytes`) on the same
    inputs and outputs the mean of their ``probabilities``: an ensemble in one file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if len(members) == 1:
        return members[0]
    models = [onnx.load_from_string(m) for m in members]
    inputs = {i.name: i for i in models[0].graph.input}
    nodes, inits, outs = [], [], []
    for k, m in enumerate(models):
        if {i.name for i in m.graph.input} != set(inputs):
            raise ModelError("ensemble members read different inputs")
        prefix = f"m{k}_"

        def rename(name: str) -> str:
            return name if name in inputs or not name else prefix + name

        for init in m.graph.initializer:
            arr = numpy_helper.to_array(init)
            inits.append(numpy_helper.from_array(arr, rename(init.name)))
        for node in m.graph.node:
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.name = prefix + node.name
            del new.input[:]
            new.input.extend(rename(n) for n in node.input)
            del new.output[:]
            new.output.extend(rename(n) for n in node.output)
            nodes.append(new)
        outs.append(prefix + "probabilities")
    nodes.append(helper.make_node("Sum", outs, ["ensemble_sum"], name="ensemble_sum"))
    inits.append(numpy_helper.from_array(np.array(1.0 / len(models), np.float32), "ensemble_scale"))
    nodes.append(helper.make_node("Mul", ["ensemble_sum", "ensemble_scale"], ["probabilities"], name="ensemble_mean"))
    n_out = models[0].graph.output[0].type.tensor_type.shape.dim[1].dim_value
    graph = helper.make_graph(
        nodes, "hybrid_ensemble", list(inputs.values()),
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", int(n_out)])], initializer=inits,
    )
    merged = helper.make_model(graph, opset_imports=list(models[0].opset_import), producer_name="meshfer")
    merged.ir_version = models[0].ir_version
    onnx.checker.check_model(merged)
    return merged.SerializeToString()
