"""The networks of an exported hybrid model (``onnx-hybrid``), read back from its ONNX graph into
Keras, so that a shipped model can be fine-tuned without the run that trained it.

:func:`meshfer.models.keras_onnx.keras_to_onnx_bytes` wrote each layer's weights as initializers
named after the layer (``m<i>_`` in front for the i-th network of an averaged graph); this module
builds the same architecture with :func:`meshfer.hybrid.build_hybrid` from the card's hparams and
sets every layer from them:

- convolution kernels transposed back from ONNX's (out, in, kh, kw) layout, Dense weights as they are;
- the Normalization layer given the graph's mean and squared standard deviation;
- each batch norm, which the export folded into one ``scale`` and ``shift``, rebuilt as gamma = scale,
  beta = shift, moving mean 0 and moving variance 1 - epsilon: exactly the exported function at
  inference (so keep batch norm frozen, in inference mode, when fine-tuning).

The auxiliary pixels-only head of training is not in the graph; it is built fresh where asked for.
Needs TensorFlow (the ``gnn`` extra) and ``onnx``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = ["onnx_initializers", "member_prefixes", "keras_members"]


def onnx_initializers(data: bytes | str | Path) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX graph (bytes or a file, ``.gz`` read too) by name."""
    import onnx
    from onnx import numpy_helper

    if not isinstance(data, (bytes, bytearray)):
        path = Path(data)
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    graph = onnx.load_from_string(bytes(data)).graph
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def member_prefixes(weights: dict[str, np.ndarray]) -> list[str]:
    """The name prefixes of the networks in a graph: ``["m0_", "m1_", ...]``, or ``[""]`` for one."""
    prefixes = sorted({name.split("_", 1)[0] + "_" for name in weights if name.startswith("m") and name.endswith("stem_w")
                       and name.split("_", 1)[0][1:].isdigit()}, key=lambda p: int(p[1:-1]))
    if prefixes:
        return prefixes
    if any(name.endswith("_w") for name in weights):
        return [""]
    raise ModelError("this ONNX graph holds no hybrid network weights")


def _set_layer(layer: Any, w: dict[str, np.ndarray], prefix: str) -> None:
    kind = type(layer).__name__
    name = prefix + layer.name

    def get(suffix: str) -> np.ndarray:
        try:
            return w[f"{name}_{suffix}"]
        except KeyError:
            raise ModelError(f"layer {layer.name} ({kind}): no '{name}_{suffix}' in the ONNX graph") from None

    if kind == "Conv2D":
        values = [get("w").transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)
        values += [get("b")] if layer.use_bias else []
    elif kind == "DepthwiseConv2D":
        values = [get("w").transpose(2, 3, 0, 1)]  # (c, 1, kh, kw) -> (kh, kw, c, 1)
        values += [get("b")] if layer.use_bias else []
    elif kind == "BatchNormalization":
        scale, shift = get("scale").reshape(-1), get("shift").reshape(-1)
        values = [scale, shift, np.zeros_like(scale), np.full_like(scale, 1.0 - layer.epsilon)]
    elif kind == "Dense":
        values = [get("w"), get("b")] if layer.use_bias else [get("w")]
    else:
        return  # no weights (or, for Normalization, set when the model is built)
    layer.set_weights([np.asarray(v, np.float32) for v in values])


def keras_members(card: Any, data: bytes | None = None, *, training_model: bool = False,
                  hparams: dict[str, Any] | None = None, only: int | None = None) -> list[Any]:
    """The Keras networks averaged in an exported hybrid model (``card``: its ModelCard), with the
    exported weights. ``data``: the ONNX bytes (default: the card's file). With ``training_model``
    each entry is ``(train_model, model)`` as :func:`meshfer.hybrid.build_hybrid` returns them (the
    auxiliary head, when the hparams ask for one, starts from fresh weights). ``hparams`` overrides
    the card's training-only settings (``aux_pixel_loss``, dropouts); ``only``: that member alone."""
    from ..hybrid import DEFAULT_HPARAMS, build_hybrid

    weights = onnx_initializers(data if data is not None else card.model_path)
    hp = {**DEFAULT_HPARAMS, **card.extra.get("hparams", {}), **(hparams or {})}
    crop_size = int((card.crop or {}).get("size", 48))
    out = []
    prefixes = member_prefixes(weights)
    if only is not None:
        if not 0 <= only < len(prefixes):
            raise ModelError(f"{card.name}: no network {only} (it averages {len(prefixes)})")
        prefixes = [prefixes[only]]
    for prefix in prefixes:
        mean = var = None
        if f"{prefix}mesh_norm_mean" in weights:
            mean = weights[f"{prefix}mesh_norm_mean"].reshape(-1).astype(np.float64)
            var = weights[f"{prefix}mesh_norm_std"].reshape(-1).astype(np.float64) ** 2
        built = build_hybrid(hp, int(card.n_features), len(card.labels), crop_size, mean, var,
                             training_model=training_model)
        model = built[1] if training_model else built
        for layer in model.layers:
            _set_layer(layer, weights, prefix)
        out.append(built)
    return out
