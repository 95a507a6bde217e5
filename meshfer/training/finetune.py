"""Fine-tuning an exported hybrid model on photos, chosen out of fold.

The shipped ``hybrid`` never saw a photo of an angry, disgusted, sad or surprised face; the only
labelled photos of them are ``muxspace-dev``'s. Warm-starting from the exported networks
(:func:`meshfer.models.onnx_keras.keras_members`) and training them a few epochs at a low rate
on a FER-2013 subsample, the training photos and those photos takes minutes instead of the 70 of a
full training, so recipes can be compared in identity-grouped folds (:mod:`meshfer.folds`):

- each fold's model trains on the photos of the other folds (rare photo classes repeated), never on
  FER-2013's held-out training images, and scores the fold's photos (out of fold) and those
  held-out images (the FER-2013 side of the choice);
- every fold's member weights and predictions are written to a cache file named after the recipe,
  the base model's SHA-256 and the folds, so a killed run resumes at the next fold;
- the two members of a fold train at once, one process and one TensorFlow thread each.

The parent process never imports TensorFlow; the workers do.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["DEFAULT_FINETUNE", "FineTuneData", "finetune_data", "load_finetune_data", "fold_training_data", "recipe_key",
           "fold_train_images", "fold_test_images", "split_finetune_data", "FoldResult", "CrossValidation", "cross_validate", "finetune_members", "recalibrate_batch_norm", "photo_metrics",
           "FER2013_TOLERANCE", "choose_recipe", "recipe_option"]

#: The baseline recipe (``--option key=value`` where a command exposes it).
DEFAULT_FINETUNE: dict[str, Any] = {
    "epochs": 8,
    "learning_rate": 1e-4,  # Adam, constant after the warm-up
    "warmup_epochs": 0.25,  # linear warm-up over this share of the first epoch(s)
    "batch_size": 128,
    "label_smoothing": 0.1,
    "fer2013_subsample": 8000,  # stratified sample of FER-2013's fit images (never its held-out ones)
    "rare_classes": "angry,disgusted,sad,surprised",  # photo classes the training photos lack ...
    "rare_repeat": 4,  # ... repeated this many times among the fold's photos
    "disgusted_repeat": 0,  # the disgusted photos' own repeat (0: rare_repeat)
    # classes weighted within each domain as in meshfer.hybrid.sample_weights (as the shipped network was
    # trained; 0: every face weighs the same, 2.3-3.5 points lower out of fold)
    "class_weight_power": 0.5,
    "augment": True,
    "augment_strength": 1.0,
    "aux_pixel_loss": 0.0,  # > 0: the auxiliary pixels-only head of training, built anew
    # batch norm re-calibrated on the training faces (the same function at inference) and trained,
    # instead of frozen with the exported statistics
    "train_batch_norm": False,
    "max_minutes": 6.0,  # per fold: a member stops after the epoch that passes this
}

PHOTOS = "photos"
#: The choice rule (README, "Photos of people never seen", written before the runs): the recipe with the
#: highest out-of-fold photo macro-F1 among those whose FER-2013 held-out accuracy is at most this much
#: below the base network's.
FER2013_TOLERANCE = 0.01


@dataclass(frozen=True)
class FineTuneData:
    """What every fold draws from: ``fer`` (the FER-2013 subsample to train on), ``fer_held`` (the
    held-out FER-2013 training images that judge the FER side), ``photos`` (the training photos'
    fit part), ``dev`` (every photo of the cross-validated folder: its faces, with ``dev.found``
    and ``dev.y_all`` over every image), ``dev_names`` (``face_x/file.jpg`` per image) and
    ``folds`` (:class:`meshfer.folds.PhotoFolds` over those names)."""

    fer: Any
    fer_held: Any
    photos: Any
    dev: Any
    dev_names: tuple[str, ...]
    folds: Any
    info: dict[str, Any] = field(default_factory=dict)

    def face_rows(self, image_rows: np.ndarray) -> np.ndarray:
        """The rows of ``dev``'s faces for images ``image_rows`` (those with a face)."""
        face_of = np.full(len(self.dev.found), -1, dtype=np.int64)
        face_of[np.flatnonzero(self.dev.found)] = np.arange(int(self.dev.found.sum()))
        rows = face_of[np.asarray(image_rows, dtype=np.int64)]
        return rows[rows >= 0]


def recipe_option(key: str, value: Any) -> Any:
    """A recipe option given as text or JSON (command line, script), as the type of its default."""
    from . import as_bool

    default = DEFAULT_FINETUNE[key]
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        return as_bool(value)
    return type(default)(float(value)) if isinstance(default, int) else type(default)(value)


def _stratified_sample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Row indices of a sample of ``n`` (at most len(y)) keeping each class's share; sorted."""
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    rows = []
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts * n / len(y)).astype(int)
    quota[np.argsort(-(counts * n / len(y) - quota))[: n - quota.sum()]] += 1
    for c, q in zip(classes, quota):
        rows.append(rng.choice(np.flatnonzero(y == c), int(q), replace=False))
    return np.sort(np.concatenate(rows))


def finetune_data(fer: Any, fer_held: Any, photos: Any, dev: Any, dev_root: str | Path, feature_set: str,
                  labels: Sequence[str], *, n_folds: int = 5, seed: int = 0,
                  fer2013_subsample: int = DEFAULT_FINETUNE["fer2013_subsample"], info: dict[str, Any] | None = None
                  ) -> FineTuneData:
    """:class:`FineTuneData` from MeshTables (with crops): ``fer`` (FER-2013 fit images, sampled
    down to ``fer2013_subsample`` faces, stratified), ``fer_held`` (held-out FER-2013 images),
    ``photos`` (training photos) and ``dev`` (the photos of folder ``dev_root``, folded by identity)."""
    from ..folds import make_folds
    from ..hybrid import prepare_hybrid

    labels = tuple(labels)
    fer_all = prepare_hybrid(fer, feature_set, labels, "fer2013")
    fer_data = fer_all.subset(_stratified_sample(fer_all.y, int(fer2013_subsample), seed))
    fer_held_data = prepare_hybrid(fer_held, feature_set, labels, "fer2013")
    photos_data = prepare_hybrid(photos, feature_set, labels, PHOTOS)
    dev = dev.subset(np.flatnonzero([str(v) in labels for v in dev.labels]))
    dev_data = prepare_hybrid(dev, feature_set, labels, PHOTOS)
    root = Path(dev_root).expanduser().absolute()
    dev_names = tuple(Path(str(p)).absolute().relative_to(root).as_posix() for p in dev.paths)
    folds = make_folds(root, n_folds, seed=seed)
    missing = set(dev_names) - set(folds.names)
    if missing:
        raise ValueError(f"{dev_root}: {len(missing)} photos are in no fold (e.g. {sorted(missing)[0]})")
    info = {**(info or {}), "fer2013_fit_faces": int(len(fer_all)), "fer2013_subsample": int(len(fer_data)),
            "fer2013_held_out_faces": int(len(fer_held_data)), "photos_fit_faces": int(len(photos_data)),
            "dev_images": int(len(dev_names)), "dev_faces": int(len(dev_data))}
    return FineTuneData(fer_data, fer_held_data, photos_data, dev_data, dev_names, folds, info)


def load_finetune_data(fer_train: Path, fer_val: Path, photos_train: Path, photos_dev: Path, config: Any,
                       feature_set: str, labels: Sequence[str], *, n_folds: int = 5,
                       fer2013_subsample: int = DEFAULT_FINETUNE["fer2013_subsample"]) -> FineTuneData:
    """Meshes (through ``config.cache_dir``), the split of ``meshfer train hybrid`` (seed
    ``config.seed``: the same held-out FER-2013 images and training photos; FER-2013 without the
    copies of ``fer_val`` images) and the identity folds of ``photos_dev``."""
    from . import load_meshes

    tables = [load_meshes(Path(p), config) for p in (fer_train, fer_val, photos_train, photos_dev)]
    return split_finetune_data(*tables, photos_dev, feature_set, labels, n_folds=n_folds, seed=config.seed,
                               fer2013_subsample=fer2013_subsample)


def split_finetune_data(train_table: Any, val_table: Any, photos_table: Any, dev_table: Any, photos_dev: str | Path,
                        feature_set: str, labels: Sequence[str], *, n_folds: int = 5, seed: int = 0,
                        fer2013_subsample: int = DEFAULT_FINETUNE["fer2013_subsample"]) -> FineTuneData:
    """:func:`load_finetune_data` on MeshTables already loaded (FER-2013 train and validation, the
    training photos, the photos of folder ``photos_dev``)."""
    from .hybrid import split_for_training, split_photos

    fit, held, left_out = split_for_training(train_table, val_table, seed=seed)
    a, _ = split_photos(photos_table, seed)
    return finetune_data(fit, held, photos_table.subset(a), dev_table, photos_dev, feature_set, labels,
                         n_folds=n_folds, seed=seed, fer2013_subsample=fer2013_subsample,
                         info={"left_out_copies_of_validation_images": int(left_out)})


def fold_train_images(data: FineTuneData, fold: int | None) -> np.ndarray:
    """Image rows of ``data.dev`` that fold ``fold``'s model trains on (``None``: all)."""
    if fold is None:
        return np.arange(len(data.dev_names))
    return np.flatnonzero(data.folds.fold[data.folds.rows_of(data.dev_names)] != fold)


def fold_test_images(data: FineTuneData, fold: int) -> np.ndarray:
    """Image rows of ``data.dev`` that fold ``fold``'s model scores (out of fold)."""
    return np.flatnonzero(data.folds.fold[data.folds.rows_of(data.dev_names)] == fold)


def fold_training_data(data: FineTuneData, fold: int | None, options: dict[str, Any]) -> Any:
    """The faces fold ``fold``'s model trains on (``None``: every photo of ``dev``): the FER-2013
    subsample, the training photos, and the dev photos outside the fold, those of ``rare_classes``
    repeated ``rare_repeat`` times."""
    from ..hybrid import HybridData

    opts = {**DEFAULT_FINETUNE, **options}
    faces = data.face_rows(fold_train_images(data, fold))
    times = np.ones(len(data.dev.labels), dtype=np.int64)
    for c in str(opts["rare_classes"]).split(","):
        if c.strip():
            times[data.dev.labels.index(c.strip())] = int(opts["rare_repeat"])
    if int(opts["disgusted_repeat"]) and "disgusted" in data.dev.labels:
        times[data.dev.labels.index("disgusted")] = int(opts["disgusted_repeat"])
    repeat = times[data.dev.y[faces]]
    dev_rows = np.repeat(faces, repeat)
    return HybridData.concat([data.fer, data.photos, data.dev.subset(dev_rows)])


def recipe_key(options: dict[str, Any], base_sha256: str, folds: Any, info: dict[str, Any], seed: int) -> str:
    """A short name for a recipe on given data: what the fold cache files are named after."""
    blob = json.dumps({"options": {**DEFAULT_FINETUNE, **options}, "base": base_sha256, "folds": folds.to_dict(),
                       "data": info, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------
# One member's fine-tuning (runs in a worker process)


def finetune_member(card: Any, member: int, train: Any, options: dict[str, Any], seed: int,
                    score: Sequence[tuple[np.ndarray, np.ndarray]] = (), threads: int = 1,
                    log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fine-tune network ``member`` of the exported model ``card`` on ``train`` (HybridData);
    returns its ``weights`` (Keras order), ``history`` and the probabilities it gives each
    ``(crops, x)`` of ``score``."""
    from ..hybrid import epoch_inputs, import_keras, predict_hybrid, sample_weights, train_epoch
    from ..models.onnx_keras import keras_members
    from . import as_bool

    opts = {**DEFAULT_FINETUNE, **options}
    tf, keras = import_keras(threads)
    keras.utils.set_random_seed(int(seed))
    aux = float(opts["aux_pixel_loss"]) > 0
    hp_override = {"aux_pixel_loss": float(opts["aux_pixel_loss"])}
    train_model, model = keras_members(card, training_model=True, hparams=hp_override, only=member)[0]
    aux = aux and train_model is not model
    if as_bool(opts["train_batch_norm"]):
        recalibrate_batch_norm(model, train, keras)
    else:
        for layer in train_model.layers:
            if type(layer).__name__ == "BatchNormalization":
                layer.trainable = False  # inference mode: the folded statistics stay exact
    k = len(train.labels)
    batch = int(opts["batch_size"])
    steps = int(np.ceil(len(train) / batch))
    warmup = max(1, int(round(float(opts["warmup_epochs"]) * steps)))
    base_lr = float(opts["learning_rate"])

    class Warm(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            step = tf.cast(step, tf.float32)
            return base_lr * tf.minimum(1.0, (step + 1.0) / float(warmup))

        def get_config(self) -> dict[str, Any]:
            return {}

    loss = keras.losses.CategoricalCrossentropy(label_smoothing=float(opts["label_smoothing"]))
    train_model.compile(optimizer=keras.optimizers.Adam(Warm()), loss=[loss, loss] if aux else loss,
                        loss_weights=[1.0, float(opts["aux_pixel_loss"])] if aux else None)
    onehot = np.eye(k, dtype=np.float32)[train.y]
    weights = sample_weights(train.y, train.domain, k, float(opts["class_weight_power"]))
    rng_seeds = np.random.SeedSequence(int(seed)).spawn(int(opts["epochs"]))
    start = time.perf_counter()
    history = []
    for epoch in range(int(opts["epochs"])):
        t0 = time.perf_counter()
        crops, x, order, _ = epoch_inputs(train, np.random.default_rng(rng_seeds[epoch]), bool(opts["augment"]),
                                          float(opts["augment_strength"]))
        losses = train_epoch(train_model, model, crops, x, onehot[order], weights[order], batch, aux)
        row = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "seconds": round(time.perf_counter() - t0, 1)}
        history.append(row)
        if log is not None:
            log(row)
        if opts.get("max_minutes") and time.perf_counter() - start > float(opts["max_minutes"]) * 60:
            row["stopped"] = f"time budget of {opts['max_minutes']} min reached"
            break
    return {"weights": model.get_weights(), "history": history, "seconds": round(time.perf_counter() - start, 1),
            "probabilities": [predict_hybrid(model, c, x) for c, x in score]}


def recalibrate_batch_norm(model: Any, train: Any, keras: Any, n: int = 2048, seed: int = 0) -> None:
    """Give every batch norm of ``model`` the mean and variance of its input over ``n`` training
    faces, changing gamma and beta so that the layer computes the same function at inference
    (gamma' = gamma * sqrt(var + eps) / sqrt(var0 + eps), beta' = beta + gamma * (mean - mean0) /
    sqrt(var0 + eps)): in training mode its batch statistics are then close to the moving ones."""
    from ..hybrid import _inputs

    layers = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    if not layers:
        return
    rows = np.random.default_rng(seed).permutation(len(train))[:n]
    probe = keras.Model(model.inputs, [layer.input for layer in layers])
    # sums over batches: the activations of every layer for thousands of faces would take gigabytes
    sums = [np.zeros(layer.input.shape[-1]) for layer in layers]
    squares = [np.zeros(layer.input.shape[-1]) for layer in layers]
    count = [0] * len(layers)
    for b0 in range(0, len(rows), 128):
        part = rows[b0:b0 + 128]
        acts = probe(_inputs(model, train.crops[part], train.x[part]), training=False)
        for i, a in enumerate(acts if isinstance(acts, (list, tuple)) else [acts]):
            a = np.asarray(a, np.float64).reshape(-1, a.shape[-1])
            sums[i] += a.sum(axis=0)
            squares[i] += (a * a).sum(axis=0)
            count[i] += len(a)
    for i, layer in enumerate(layers):
        mean = sums[i] / count[i]
        var = np.maximum(squares[i] / count[i] - mean * mean, 0.0)
        gamma, beta, mean0, var0 = (w.astype(np.float64) for w in layer.get_weights())
        eps = layer.epsilon
        scale0 = gamma / np.sqrt(var0 + eps)
        layer.set_weights([(scale0 * np.sqrt(var + eps)).astype(np.float32),
                           (beta + scale0 * (mean - mean0)).astype(np.float32),
                           mean.astype(np.float32), var.astype(np.float32)])


def _member_worker(args: tuple) -> dict[str, Any]:
    from ..hybrid import worker_setup

    worker_setup()
    card, member, train, options, seed, score = args
    return finetune_member(card, member, train, options, seed, score, threads=1)


def finetune_members(card: Any, train: Any, options: dict[str, Any], seed: int,
                     score: Sequence[tuple[np.ndarray, np.ndarray]] = (), processes: int | None = None) -> list[dict[str, Any]]:
    """Every member of ``card``'s model fine-tuned on ``train`` (member ``i`` with seed ``seed + i``),
    in parallel processes (one per member, at most ``processes``)."""
    from ..hybrid import _cores
    from ..models.onnx_keras import member_prefixes, onnx_initializers

    n = len(member_prefixes(onnx_initializers(card.model_path)))
    jobs = [(card, i, train, options, seed + i, list(score)) for i in range(n)]
    procs = max(1, min(n, int(processes or _cores())))
    if procs == 1:
        return [finetune_member(*job[:5], score=job[5], threads=1) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from ..errors import MeshferError

    try:
        with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_member_worker, jobs))
    except BrokenProcessPool:
        raise MeshferError("a fine-tuning process died (out of memory, or a crash inside TensorFlow)") from None


# --------------------------------------------------------------------------------------------------
# Folds


@dataclass
class FoldResult:
    """One fold: which photos it scored (image rows of ``dev``), their probabilities (NaN rows: no
    face), the held-out FER-2013 faces' probabilities, timings."""

    fold: int
    rows: np.ndarray
    proba: np.ndarray
    fer_held_proba: np.ndarray
    seconds: float
    histories: list[list[dict[str, Any]]]
    trained_on: tuple[str, ...] = ()  # the dev photos (names) its model was fine-tuned on
    resumed: bool = False


@dataclass
class CrossValidation:
    """Out-of-fold probabilities of every ``dev`` image (NaN: no face) and each fold's result."""

    key: str
    options: dict[str, Any]
    proba: np.ndarray
    folds: list[FoldResult]
    data: FineTuneData

    def metrics(self) -> dict[str, Any]:
        """Photo metrics out of fold (every image counted, no face = wrong) and the fold models'
        mean accuracy on the held-out FER-2013 faces."""
        out = photo_metrics(self.proba, self.data.dev.y_all, list(self.data.dev.labels))
        accs = [float(np.mean(f.fer_held_proba.argmax(axis=1) == self.data.fer_held.y)) for f in self.folds]
        out["fer2013_held_out_accuracy"] = float(np.mean(accs))
        out["fer2013_held_out_accuracy_per_fold"] = [round(a, 4) for a in accs]
        out["seconds_per_fold"] = [round(f.seconds, 1) for f in self.folds]
        return out


def photo_metrics(proba: np.ndarray, y_all: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """classification_metrics of probabilities with NaN rows for images without a face."""
    from ..evaluation import classification_metrics

    found = ~np.isnan(proba).any(axis=1)
    pred = np.where(found, np.nan_to_num(proba).argmax(axis=1), -1)
    return classification_metrics(y_all, pred, labels)


def _save_fold(path: Path, result: FoldResult) -> None:
    import io

    from .._io import atomic_write

    buf = io.BytesIO()
    np.savez(buf, rows=result.rows, proba=result.proba, fer_held_proba=result.fer_held_proba,
             seconds=np.float64(result.seconds), histories=np.array(json.dumps(result.histories)),
             trained_on=np.array(json.dumps(list(result.trained_on))))
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def _load_fold(path: Path, fold: int) -> FoldResult | None:
    try:
        with np.load(path) as z:
            return FoldResult(fold, z["rows"], z["proba"], z["fer_held_proba"], float(z["seconds"]),
                              json.loads(str(z["histories"])), tuple(json.loads(str(z["trained_on"]))), resumed=True)
    except (OSError, KeyError, ValueError):
        return None  # a damaged file is done again


def _load_weights(path: Path) -> list[list[np.ndarray]]:
    """What :func:`_save_weights` wrote: each member's weights, in Keras order."""
    with np.load(path) as z:
        names = [name.split("_") for name in z.files]
        n = max(int(m[1:]) for m, _ in names) + 1
        return [[z[f"m{i}_{j}"] for j in range(sum(1 for m, _ in names if m == f"m{i}"))] for i in range(n)]


def _save_weights(path: Path, members: list[list[np.ndarray]]) -> None:
    import io

    from .._io import atomic_write

    buf = io.BytesIO()
    np.savez(buf, **{f"m{i}_{j}": w for i, ws in enumerate(members) for j, w in enumerate(ws)})
    with atomic_write(path) as f:
        f.write(buf.getvalue())


def cross_validate(card: Any, data: FineTuneData, options: dict[str, Any] | None = None, *,
                   cache_dir: str | Path, seed: int = 0, folds: Sequence[int] | None = None,
                   progress: bool = True, log: Callable[[str], None] | None = print,
                   processes: int | None = None) -> CrossValidation:
    """Fine-tune ``card``'s model once per fold and score each fold's photos out of fold. Each
    fold's result (``fold<k>.npz``) and member weights (``fold<k>.weights.npz``) go to
    ``cache_dir/<recipe key>/`` as soon as the fold ends; folds already there are read, not run
    again. ``folds``: only these folds (the others stay NaN); ``processes``: members trained at once
    (default: one process per member, up to the number of cores)."""
    options = dict(options or {})
    unknown = set(options) - set(DEFAULT_FINETUNE)
    if unknown:
        raise KeyError(f"unknown fine-tuning option(s) {', '.join(sorted(unknown))}; valid: {', '.join(DEFAULT_FINETUNE)}")
    key = recipe_key(options, card.sha256, data.folds, data.info, seed)
    folder = Path(cache_dir).expanduser() / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps({"options": {**DEFAULT_FINETUNE, **options}, "base_sha256": card.sha256,
                                                    "seed": seed, "data": data.info}, indent=1, default=str))
    proba = np.full((len(data.dev_names), len(data.dev.labels)), np.nan)
    results = []
    wanted = list(range(data.folds.n_folds)) if folds is None else list(folds)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(wanted), unit="fold", desc=f"Fine-tuning {key}", dynamic_ncols=True)
    try:
        for k in wanted:
            path = folder / f"fold{k}.npz"
            result = _load_fold(path, k) if path.exists() else None
            if result is None:
                t0 = time.perf_counter()
                images = fold_test_images(data, k)
                test = data.dev.subset(data.face_rows(images))
                train = fold_training_data(data, k, options)
                outs = finetune_members(card, train, options, seed=seed * 1000 + k * 10, processes=processes,
                                        score=[(test.crops, test.x), (data.fer_held.crops, data.fer_held.x)])
                fold_proba = np.full((len(images), len(data.dev.labels)), np.nan)
                fold_proba[data.dev.found[images]] = np.mean([o["probabilities"][0] for o in outs], axis=0)
                trained_on = tuple(data.dev_names[i] for i in fold_train_images(data, k))
                result = FoldResult(k, images, fold_proba, np.mean([o["probabilities"][1] for o in outs], axis=0),
                                    time.perf_counter() - t0, [o["history"] for o in outs], trained_on)
                _save_weights(folder / f"fold{k}.weights.npz", [o["weights"] for o in outs])
                _save_fold(path, result)
            proba[result.rows] = result.proba
            results.append(result)
            if log is not None:
                acc = float(np.mean(result.fer_held_proba.argmax(axis=1) == data.fer_held.y))
                scored = ~np.isnan(result.proba).any(axis=1)
                right = np.mean(np.where(scored, np.nan_to_num(result.proba).argmax(axis=1), -1) == data.dev.y_all[result.rows])
                log(f"fold {k}: {len(result.rows)} photos, accuracy {right:.3f}; FER-2013 held-out accuracy {acc:.3f}; "
                    f"{result.seconds / 60:.1f} min{' (from the cache)' if result.resumed else ''}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return CrossValidation(key, {**DEFAULT_FINETUNE, **options}, proba, results, data)


def choose_recipe(results: dict[str, dict[str, Any]], base: str, tolerance: float = FER2013_TOLERANCE) -> str | None:
    """The recipe the rule picks from ``results`` ({name: metrics with ``macro_f1`` and
    ``fer2013_held_out_accuracy``}, as ``scripts/finetune_folds.py --json`` writes them; ``base``:
    the entry of the network before fine-tuning): the highest out-of-fold photo macro-F1 among the
    recipes whose FER-2013 held-out accuracy is at most ``tolerance`` below the base's; None when
    no recipe qualifies."""
    floor = float(results[base]["fer2013_held_out_accuracy"]) - tolerance
    eligible = {name: m for name, m in results.items()
                if name != base and float(m["fer2013_held_out_accuracy"]) >= floor - 1e-12}
    if not eligible:
        return None
    return max(eligible, key=lambda name: (float(eligible[name]["macro_f1"]), float(eligible[name]["accuracy"])))
