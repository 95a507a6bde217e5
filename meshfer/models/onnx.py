"""Running exported models with ONNX Runtime: the lean prediction path (no scikit-learn, no
TensorFlow)."""

from __future__ import annotations

import gzip

import numpy as np

from ..errors import ModelError
from .card import ModelCard

__all__ = ["OnnxModel"]


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
