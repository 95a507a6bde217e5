"""Running exported models with ONNX Runtime: the lean prediction path (no scikit-learn, no
TensorFlow)."""

from __future__ import annotations

import gzip

import numpy as np

from ..errors import ModelError
from .card import ModelCard

__all__ = ["OnnxModel", "HybridOnnxModel", "check_session"]


def _width(shape: list) -> int | None:
    """The last dimension of an ONNX tensor shape when it is fixed (None when symbolic)."""
    if not shape or len(shape) < 2:
        return None
    last = shape[-1]
    return last if isinstance(last, int) and last > 0 else None


def check_session(card: ModelCard, session: object) -> None:
    """Check an ONNX Runtime session against its card: the mesh input is ``n_features`` wide, a
    hybrid's crop input matches ``card.crop``, and the output is as wide as the labels (or
    targets). Widths the file leaves open are found with one dry run on zeros. Raises ModelError
    naming the card."""
    where = card.path or card.name
    inputs = {i.name: i for i in session.get_inputs()}  # type: ignore[attr-defined]
    outputs = session.get_outputs()  # type: ignore[attr-defined]
    if not inputs or not outputs:
        raise ModelError(f"{where}: the model file has no inputs or no outputs")
    if card.format == "onnx-hybrid":
        if "mesh" not in inputs and "crop" not in inputs:
            raise ModelError(f"{where}: an onnx-hybrid model needs inputs named 'crop' and 'mesh' (has {', '.join(inputs)})")
        mesh = inputs.get("mesh")
        crop = inputs.get("crop")
        if crop is not None:
            size = int(card.crop.get("size", 48)) if card.crop else None
            dims = [d for d in crop.shape[1:3] if isinstance(d, int)]
            if size is not None and dims and any(d != size for d in dims):
                raise ModelError(f"{where}: the model reads {'x'.join(map(str, crop.shape[1:3]))} crops, the card says {size}")
        names = [o.name for o in outputs]
        if "probabilities" not in names:
            raise ModelError(f"{where}: an onnx-hybrid model needs an output named 'probabilities' (has {', '.join(names)})")
        out = next(o for o in outputs if o.name == "probabilities")
    else:
        mesh = next(iter(inputs.values()))
        names = [o.name for o in outputs]
        out = next((o for o in outputs if o.name == "probabilities"), None) if card.is_classifier else None
        if out is None:
            out = next((o for o in outputs if len(o.shape or []) == 2), outputs[0])
    if mesh is not None:
        width = _width(mesh.shape)
        if width is not None and width != card.n_features:
            raise ModelError(
                f"{where}: the model reads {width} features, the card says n_features {card.n_features} ({card.feature_set})"
            )
    expected = len(card.labels) if card.is_classifier else len(card.targets)
    got = _width(out.shape)
    if got is None:  # not fixed in the file: ask the model
        import numpy as np

        feeds = {}
        for name, i in inputs.items():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            if i is mesh:
                shape = [1, card.n_features]
            dtype = np.float64 if "double" in i.type else np.float32
            feeds[name] = np.zeros(shape, dtype)
        try:
            value = session.run([out.name], feeds)[0]  # type: ignore[attr-defined]
        except Exception as exc:
            raise ModelError(f"{where}: the model fails on a test input ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
        got = int(np.prod(np.shape(value)[1:])) if np.ndim(value) >= 2 else 1
    if got != expected:
        what = "labels" if card.is_classifier else "targets"
        raise ModelError(f"{where}: the model has {got} outputs but the card lists {expected} {what} ({', '.join(card.labels or card.targets)})")


class OnnxModel:
    """A classifier or regressor stored as ONNX (``.onnx``, or gzip-compressed ``.onnx.gz``), with
    its :class:`ModelCard`.

    Runs single-threaded: the models are tiny, and a thread pool costs more than it saves.
    """

    def __init__(self, card: ModelCard, data: bytes | None = None) -> None:
        """Load ``card``'s model file, or the serialized ONNX ``data`` when given (to check a model
        before it is written)."""
        import onnxruntime as ort

        self.card = card
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            path = card.model_path
            model: str | bytes
            if data is not None:
                model = data
            else:
                model = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else str(path)
            self._session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{card.model_path}: cannot load ONNX model ({first})") from None
        inputs = self._session.get_inputs()
        self._input = inputs[0].name
        self._dtype = np.float64 if "double" in inputs[0].type else np.float32
        self._outputs = [o.name for o in self._session.get_outputs()]
        # Classifiers: only the probabilities are needed (the label output is their arg-max).
        self._proba_output = "probabilities" if "probabilities" in self._outputs else None
        check_session(card, self._session)

    def _run(self, features: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        x = np.asarray(features, dtype=self._dtype)
        if x.ndim == 1:
            x = x[None]
        if x.shape[1] != self.card.n_features:
            raise ValueError(
                f"model {self.card.name!r} expects {self.card.n_features} features "
                f"({self.card.feature_set}), got {x.shape[1]}"
            )
        return self._session.run(outputs, {self._input: np.ascontiguousarray(x)})

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """(N, n_labels) class probabilities, columns in ``card.labels`` order."""
        if not self.card.is_classifier:
            raise TypeError(f"model {self.card.name!r} is a regressor")
        if self._proba_output is not None:
            return np.asarray(self._run(features, [self._proba_output])[0], dtype=np.float64)
        proba = next(v for v in self._run(features) if np.ndim(v) == 2)
        return np.asarray(proba, dtype=np.float64)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Classifiers: (N,) label strings. Regressors: (N, n_targets) float array."""
        if self.card.is_classifier:
            proba = self.predict_proba(features)
            return np.asarray(self.card.labels)[proba.argmax(axis=1)]
        out = np.asarray(self._run(features)[0], dtype=np.float64)
        return out.reshape(len(out), -1)


#: Faces per ONNX Runtime call of a hybrid model (larger inputs are run in parts of this size).
_BATCH = 512


class HybridOnnxModel(OnnxModel):
    """An expression network that reads the face crop as well as the mesh features (card format
    ``onnx-hybrid``): ONNX inputs ``crop`` (N, S, S, 1), the crops of
    :func:`meshfer.crops.standardize`, and ``mesh`` (N, n_features). ``card.crop`` says how the
    crops must be made (:class:`meshfer.crops.CropSpec`)."""

    def __init__(self, card: ModelCard, data: bytes | None = None) -> None:
        super().__init__(card, data)
        from ..crops import CropSpec

        self.crop_spec = CropSpec.from_dict(card.crop) if card.crop else None
        self._names = {i.name for i in self._session.get_inputs()}
        if "crop" in self._names and self.crop_spec is None:
            raise ModelError(f"{card.path}: the model reads face crops but its card has no 'crop' entry")

    @property
    def needs_crops(self) -> bool:
        return "crop" in self._names

    @property
    def needs_mirror(self) -> bool:
        """True when the card asks for mirror averaging (``extra["mirror_tta"]``): the face and its
        mirror image (flipped crop, mirrored mesh) are both run and their probabilities averaged."""
        return bool(self.card.extra.get("mirror_tta"))

    def mirror_features(self, landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None) -> np.ndarray:
        """The card's feature set of the mirrored faces (what :meth:`predict_proba` needs as
        ``mirrored`` when :attr:`needs_mirror`)."""
        from .. import features

        lm = np.asarray(landmarks, dtype=np.float32).reshape(-1, 478, 3)
        return features.compute(self.card.feature_set, features.mirror_landmarks(lm),
                                features.mirror_blendshapes(np.asarray(blendshapes, np.float32).reshape(len(lm), -1)),
                                image_sizes)

    def predict_proba(  # type: ignore[override]
        self, features: np.ndarray, crops: np.ndarray | None = None, mirrored: np.ndarray | None = None
    ) -> np.ndarray:
        """(N, n_labels) probabilities for mesh ``features`` (N, n_features) and uint8 ``crops``
        (N, S, S); with :attr:`needs_mirror`, also the ``mirrored`` faces' features
        (:meth:`mirror_features`), and the result is the mean over each face and its mirror image."""
        from ..crops import standardize

        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        n = len(x)
        if self.needs_mirror:
            if mirrored is None:
                raise ValueError(f"model {self.card.name!r} averages each face with its mirror image: pass the "
                                 "mirrored faces' features (model.mirror_features(landmarks, blendshapes, sizes))")
            xm = np.asarray(mirrored, dtype=np.float32).reshape(n, -1)
            x = np.concatenate([x, xm])
        feeds: dict[str, np.ndarray] = {}
        if "mesh" in self._names:
            if x.shape[1] != self.card.n_features:
                raise ValueError(
                    f"model {self.card.name!r} expects {self.card.n_features} features ({self.card.feature_set}), got {x.shape[1]}"
                )
            feeds["mesh"] = np.ascontiguousarray(x)
        if self.needs_crops:
            if crops is None:
                raise ValueError(f"model {self.card.name!r} needs the face crops (LandmarkerOptions(crop=...))")
            crops = np.asarray(crops)
            assert self.crop_spec is not None
            if crops.ndim == 2:
                crops = crops[None]
            if crops.shape[1:] != (self.crop_spec.size, self.crop_spec.size) or len(crops) != n:
                raise ValueError(
                    f"model {self.card.name!r} expects {n} crops of {self.crop_spec.size}x{self.crop_spec.size}, "
                    f"got an array of shape {crops.shape}"
                )
            if self.needs_mirror:
                crops = np.concatenate([crops, crops[:, :, ::-1]])
            feeds["crop"] = standardize(crops)
        rows = len(x)
        if rows <= _BATCH:
            proba = np.asarray(self._session.run(["probabilities"], feeds)[0], dtype=np.float64)
        else:  # ONNX Runtime holds every layer's activations for the whole batch: ~3.5 MB per face
            proba = np.concatenate([
                np.asarray(self._session.run(["probabilities"], {k: v[i:i + _BATCH] for k, v in feeds.items()})[0],
                           dtype=np.float64)
                for i in range(0, rows, _BATCH)
            ])
        return 0.5 * (proba[:n] + proba[n:]) if self.needs_mirror else proba
