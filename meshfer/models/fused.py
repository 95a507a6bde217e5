"""One ONNX graph for a face: the feature sets, the crop's standardisation and the models of
several tasks (expression, eyes, gaze, mouth) in a single session.

Built from shipped model files, with no retraining: :func:`fused_bytes` takes the member cards,
prefixes each member graph's names with its task, feeds it the feature set its card names (from
:mod:`meshfer.models.feature_graph`) and exposes one output per task, shaped as
:meth:`meshfer.predict.Predictor.predict_arrays` returns it: ``expression`` and ``mouth`` (N, C)
probabilities, ``eye`` (N, 2, C) for the subject's [left, right] eye, ``gaze`` (N, 2) clipped to the
card's output range. Inputs: ``landmarks`` (N, 478, 3), ``blendshapes`` (N, 52), ``image_sizes``
(N, 2) and, when a member reads it, ``crop`` (N, S, S) (the uint8 crop as float). Needs ``onnx`` to
build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .card import ModelCard
from .feature_graph import FEATURE_BUILDERS, RAW_INPUTS, GraphBuilder

__all__ = ["FUSED_TASKS", "fused_bytes", "fusable", "fused_dir", "build_default_fused", "FusedSession", "default_fused", "fused_status"]

#: The tasks a fused graph can hold, in output order.
FUSED_TASKS = ("expression", "eye", "gaze", "mouth")
_DOUBLE = 11  # onnx.TensorProto.DOUBLE


def fusable(cards: dict[str, ModelCard]) -> str | None:
    """Why these member cards cannot be fused (None when they can)."""
    for task, card in cards.items():
        if task not in FUSED_TASKS:
            return f"task {task!r} has no place in a fused graph"
        if card.feature_set not in FEATURE_BUILDERS:
            return f"model {card.name!r}: no ONNX graph for its feature set {card.feature_set}"
        if card.format not in ("onnx", "onnx-hybrid"):
            return f"model {card.name!r} is not an ONNX model ({card.format})"
        if card.extra.get("mirror_tta"):
            return f"model {card.name!r} averages each face with its mirror image"
    return None


def _member_graph(card: ModelCard) -> Any:
    import gzip

    import onnx

    path = card.model_path
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return onnx.load_from_string(data)


def _standardized_crop(g: GraphBuilder, crop: str) -> str:
    """:func:`meshfer.crops.standardize`: zero mean, unit variance per crop (std at least 4), (N, S, S, 1)."""
    axes = [1, 2]
    mean = g.op("ReduceMean", [crop], axes=axes, keepdims=1)
    centred = g.op("Sub", [crop, mean])
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=axes, keepdims=1)
    std = g.op("Max", [g.op("Sqrt", [var]), g.const(4.0, "four")])
    return g.op("Unsqueeze", [g.op("Div", [centred, std]), g.const([3], "axes", np.int64)])


def fused_bytes(cards: dict[str, ModelCard], opset: int = 17) -> bytes:
    """The fused ONNX model of the member ``cards`` (task -> card); raises ModelError when they
    cannot be fused (:func:`fusable`)."""
    import onnx
    from onnx import TensorProto, compose, helper

    problem = fusable(cards)
    if problem:
        raise ModelError(f"cannot fuse: {problem}")
    g = GraphBuilder(prefix="features")
    feature_out: dict[str, str] = {}
    for card in cards.values():
        if card.feature_set not in feature_out:
            feature_out[card.feature_set] = FEATURE_BUILDERS[card.feature_set](g, "landmarks", "blendshapes", "image_sizes")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s]) for n, s in RAW_INPUTS]
    outputs = []
    nodes, initializers = g.nodes, g.initializers
    opsets: dict[str, int] = {"": opset}
    ir_version = 8
    crop_std: str | None = None
    for task in FUSED_TASKS:
        if task not in cards:
            continue
        card = cards[task]
        member = _member_graph(card)
        ir_version = max(ir_version, member.ir_version)
        for imp in member.opset_import:
            opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
        member = compose.add_prefix(member, prefix=f"{task}/")
        graph = member.graph
        initializers.extend(graph.initializer)
        feats = feature_out[card.feature_set]
        member_inputs = {i.name: i for i in graph.input}
        for name, value in member_inputs.items():
            bare = name[len(task) + 1:]
            if bare == "crop":
                if crop_std is None:
                    size = int((card.crop or {}).get("size", 48))
                    inputs.append(helper.make_tensor_value_info("crop", TensorProto.FLOAT, ["N", size, size]))
                    crop_std = _standardized_crop(g, "crop")
                source = crop_std
            else:
                source = feats
                if value.type.tensor_type.elem_type == _DOUBLE:
                    source = g.op("Cast", [feats], "cast", to=_DOUBLE)
            nodes.append(helper.make_node("Identity", [source], [name], name=f"{name}/feed"))
        nodes.extend(graph.node)  # after its feeds: a graph's nodes are topologically sorted
        if card.is_classifier:
            chosen = next((o for o in graph.output if o.name.endswith("/probabilities")), None)
            if chosen is None:
                raise ModelError(f"cannot fuse {card.name!r}: its graph has no 'probabilities' output")
        else:
            chosen = graph.output[0]
        out, elem_type = chosen.name, chosen.type.tensor_type.elem_type
        if task == "eye":
            out = g.op("Reshape", [out, g.const([-1, 2, len(card.labels)], "shape", np.int64)])
        elif task == "gaze" and card.extra.get("output_range") is not None:
            lo, hi = card.extra["output_range"]
            dtype = np.float64 if elem_type == _DOUBLE else np.float32
            out = g.op("Clip", [out, g.const(lo, "lo", dtype), g.const(hi, "hi", dtype)])
        nodes.append(helper.make_node("Identity", [out], [task], name=f"{task}/out"))
        width = len(card.labels) if card.is_classifier else len(card.targets)
        shape = ["N", 2, width] if task == "eye" else ["N", width]
        outputs.append(helper.make_tensor_value_info(task, elem_type, shape))
    graph = helper.make_graph(nodes, "meshfer_fused", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              producer_name="meshfer")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model.SerializeToString()


# -- the shipped fused graph of the default models -----------------------------------------------

#: The fused graph of the default models and its manifest, in ``meshfer/data/models/fused/``.
DEFAULT_FUSED = "defaults"


def fused_dir() -> Path:
    """Where the fused graph of the shipped default models is kept."""
    from .registry import models_dir

    return models_dir() / "fused"


def build_default_fused(out_dir: str | Path | None = None) -> Path:
    """Write ``defaults.onnx`` (:func:`fused_bytes` of the shipped default models) and its manifest
    ``defaults.json`` (the members' names, files and SHA-256, the file's SHA-256) to ``out_dir``
    (default :func:`fused_dir`); return the manifest's path. The same shipped models always give
    the same bytes."""
    import hashlib
    import json

    from .registry import default_card

    cards = {task: card for task in FUSED_TASKS if (card := default_card(task)) is not None}
    data = fused_bytes(cards)
    folder = Path(out_dir) if out_dir is not None else fused_dir()
    folder.mkdir(parents=True, exist_ok=True)
    from .._io import atomic_write

    with atomic_write(folder / f"{DEFAULT_FUSED}.onnx") as fh:
        fh.write(data)
    manifest = {
        "name": DEFAULT_FUSED,
        "file": f"{DEFAULT_FUSED}.onnx",
        "sha256": hashlib.sha256(data).hexdigest(),
        "description": "the shipped default models of every task and their feature sets in one ONNX graph "
        "(python -m meshfer.models.fused rebuilds it from the member files)",
        "inputs": {"landmarks": ["N", 478, 3], "blendshapes": ["N", 52], "image_sizes": ["N", 2],
                   **({"crop": ["N", int(cards["expression"].crop.get("size", 48)), int(cards["expression"].crop.get("size", 48))]}
                      if "expression" in cards and cards["expression"].crop else {})},
        "members": {task: {"name": c.name, "file": c.file, "sha256": c.sha256, "feature_set": c.feature_set}
                    for task, c in cards.items()},
    }
    with atomic_write(folder / f"{DEFAULT_FUSED}.json") as fh:
        fh.write((json.dumps(manifest, indent=1) + "\n").encode())
    return folder / f"{DEFAULT_FUSED}.json"


class FusedSession:
    """An ONNX Runtime session of a fused graph (one thread), run on raw face arrays."""

    def __init__(self, manifest: dict[str, Any], path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.manifest = manifest
        self.tasks = tuple(manifest["members"])
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.needs_crops = "crop" in self._inputs

    def run(self, landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None,
            crops: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each task's output, as :meth:`meshfer.predict.Predictor.predict_arrays` gives it."""
        n = len(landmarks)
        sizes = np.ones((n, 2), np.float32) if image_sizes is None else np.asarray(image_sizes, np.float32).reshape(n, 2)
        feeds = {"landmarks": np.ascontiguousarray(landmarks, np.float32),
                 "blendshapes": np.ascontiguousarray(blendshapes, np.float32), "image_sizes": sizes}
        if self.needs_crops:
            feeds["crop"] = np.asarray(crops, np.float32).reshape(n, *np.shape(crops)[-2:])
        values = self._session.run(list(self.tasks), feeds)
        return {task: np.asarray(v, dtype=np.float64) for task, v in zip(self.tasks, values)}


def _matches(members: dict[str, Any], cards: dict[str, ModelCard]) -> bool:
    """Whether a manifest's members are exactly ``cards`` (the same tasks, the same files by SHA-256)."""
    return set(members) == set(cards) and all(members[t]["sha256"] == c.sha256 for t, c in cards.items())


def fused_manifest() -> dict[str, Any] | None:
    """The manifest of the shipped fused graph (its file, SHA-256, inputs and members); None when none is shipped."""
    import json

    path = fused_dir() / f"{DEFAULT_FUSED}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fused_file(manifest: dict[str, Any]) -> Path:
    """The fused graph's file, checked against its manifest's SHA-256 (ModelError when missing or changed)."""
    from ..assets import sha256_of

    file = fused_dir() / manifest["file"]
    if not file.is_file() or sha256_of(file) != manifest["sha256"]:
        raise ModelError(f"{file}: the fused model file is missing or was changed (rebuild it: python -m meshfer.models.fused)")
    return file


def default_fused(cards: dict[str, ModelCard]) -> FusedSession | None:
    """The shipped fused graph when its members are exactly ``cards`` (task -> card, compared by
    SHA-256); None otherwise (another model chosen, a task off, or no fused graph shipped)."""
    manifest = fused_manifest()
    if manifest is None or not _matches(manifest.get("members", {}), cards):
        return None
    return FusedSession(manifest, fused_file(manifest))


def fused_status() -> str:
    """One line on the fused graph of the default models: what it holds, or why it is not used."""
    from .registry import default_card

    manifest = fused_manifest()
    if manifest is None:
        return "no fused graph of the default models (python -m meshfer.models.fused builds it)"
    members = manifest.get("members", {})
    cards = {task: card for task in FUSED_TASKS if (card := default_card(task)) is not None}
    names = ", ".join(m["name"] for m in members.values())
    if not _matches(members, cards):
        return (f"the fused graph ({names}) no longer matches the default models: unused "
                "(python -m meshfer.models.fused rebuilds it)")
    return f"the default models ({names}) and their features also run as one ONNX graph: fused/{DEFAULT_FUSED}.onnx"


def main() -> None:
    """``python -m meshfer.models.fused``: rebuild the fused graph of the shipped default models."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("-o", "--output-dir", default=None, help="folder (default: the package's models/fused)")
    args = ap.parse_args()
    print(f"wrote {build_default_fused(args.output_dir)}")


if __name__ == "__main__":
    main()
