"""``meshfer train hybrid``: the hybrid expression network (face crop + mesh), from data folders
to a checked ONNX file and its model card.

Protocol (the same as the other expression recipes, plus photos):

- fit on ``train_dir`` (FER-2013 train) without its byte-identical copies of ``--val`` images, and
  optionally on a folder of ordinary photos (``--option photos_train_dir=...``, muxspace-train);
- early stopping and every choice on 10 % of those training images, held out by a stratified split
  that keeps byte-identical pictures and augmented copies on one side
  (:func:`meshfer.training.expression.selection_split`);
- report on ``--val`` (every image counted: no face = wrong) and on ``--option photos_dir=...``
  (muxspace-dev), neither of which is trained or tuned on;
- export to ONNX, checked against Keras on real faces before anything is written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..meshtable import MeshTable
from . import as_bool, leave_out_copies, load_meshes, short_path

__all__ = ["HYBRID_FEATURE_SET", "DESCRIPTION", "MIRROR_MIN_GAIN", "split_for_training", "held_out_data", "export_hybrid",
           "train", "choose_mirror", "reselect_mirror"]

#: The mesh branch's input: the 52 blendshapes and the aligned coordinates of 86 key points.
HYBRID_FEATURE_SET = "blendshapes_aligned_keypoints"
DESCRIPTION = (
    "hybrid network: a mobile-style CNN on the 48x48 mesh-aligned grey face crop fused with a dense branch on "
    "the blendshapes and aligned key points; trained on FER-2013 and ordinary photos with photo/webcam augmentation"
)
PHOTOS = "photos"
#: What mirror averaging must add to the held-out selection score to be kept (``mirror_tta=auto``). It
#: doubles the network's time, so it has to gain more than the spread between two training seeds (the
#: shipped members' best held-out scores differ by 0.005); ``--option mirror_tta=true|false`` overrides.
MIRROR_MIN_GAIN = 0.005


def split_for_training(
    table: MeshTable, validation: MeshTable | None, *, seed: int = 0, test_size: float = 0.1
) -> tuple[MeshTable, MeshTable, int]:
    """(fit, held_out, n_left_out): the training images without the copies of validation images,
    then 10 % of them held out (stratified; duplicates and augmented copies on one side)."""
    from .expression import selection_split

    left_out = 0
    if validation is not None:
        table, left_out = leave_out_copies(table, validation)
    fit, held = selection_split(table, None, test_size=test_size, seed=seed)
    return fit, held, left_out


def split_photos(photos: MeshTable, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) of the training photos: 10 %, stratified, copies on one side."""
    from ..datasets import group_split

    return group_split(photos.groups, 0.1, seed=seed, stratify=photos.labels)


def held_out_data(
    train_table: MeshTable, validation: MeshTable | None, photos: MeshTable | None, feature_set: str,
    labels: Sequence[str], *, seed: int = 0,
) -> Any:
    """The held-out training images of ``meshfer train hybrid`` (FER-2013's and the training photos'),
    as :class:`meshfer.hybrid.HybridData`: what every choice of the recipe is made on."""
    from ..hybrid import HybridData, prepare_hybrid

    _, held, _ = split_for_training(train_table, validation, seed=seed)
    parts = [prepare_hybrid(held, feature_set, labels, "fer2013")]
    if photos is not None:
        parts.append(prepare_hybrid(photos.subset(split_photos(photos, seed)[1]), feature_set, labels, PHOTOS))
    return HybridData.concat(parts)


def choose_mirror(held_scores: dict[str, float], choice: str = "auto", min_gain: float = MIRROR_MIN_GAIN) -> bool:
    """Whether the model averages each face with its mirror image: with ``choice="auto"``, when that
    gains more than ``min_gain`` on the held-out selection score (``held_scores``: "plain" and
    "mirror_averaged"); else as ``choice`` says (true/false)."""
    choice = str(choice).strip().lower()
    if choice == "auto":
        return bool(held_scores["mirror_averaged"] > held_scores["plain"] + min_gain)
    if choice in ("true", "1", "yes"):
        return True
    if choice in ("false", "0", "no"):
        return False
    raise ValueError(f"--option mirror_tta={choice}: use auto, true or false")


def mirror_scores(models: Sequence[Any], held: Any, ratios: dict[str, Any] | None = None
                  ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The held-out selection scores of Keras members ``models`` on ``held`` (HybridData) without and
    with mirror averaging (what :func:`choose_mirror` reads), and both probabilities (adjusted to
    the domains' priors by ``ratios`` when given)."""
    from ..hybrid import adjust_to_domains, predict_members, selection_score

    plain = predict_members(models, held.crops, held.x)
    mirrored = 0.5 * (plain + predict_members(models, held.crops[:, :, ::-1], held.x_mirror))
    plain, mirrored = (adjust_to_domains(p, held.domain, ratios) for p in (plain, mirrored))
    k = len(held.labels)
    scores = {"plain": selection_score(held, plain.argmax(axis=1), k),
              "mirror_averaged": selection_score(held, mirrored.argmax(axis=1), k)}
    return scores, plain, mirrored


def export_hybrid(
    keras_model: Any | Sequence[Any],
    directory: str | Path,
    *,
    name: str,
    labels: Sequence[str],
    feature_set: str,
    check_crops: np.ndarray,
    check_features: np.ndarray,
    crop: dict[str, Any],
    mirror_tta: bool = False,
    check_mirrored: np.ndarray | None = None,
    evaluate_on: dict[str, MeshTable] | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    **card_fields: Any,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Write ``<directory>/<name>.onnx`` and ``<name>.json`` for a trained Keras hybrid network
    (or several, averaged in one ONNX graph).

    The ONNX graph must give the Keras probabilities within ``tolerance`` on ``check_crops`` /
    ``check_features`` (real faces) before anything is written; an existing model is kept unless
    ``overwrite``. ``evaluate_on`` ({name: MeshTable}) is scored with the exported model, as
    ``meshfer evaluate`` would; returns the card and those metrics."""
    from dataclasses import replace

    from .._io import atomic_write
    from ..assets import sha256_of
    from ..errors import ModelError
    from ..evaluation import evaluate_table
    from ..hybrid import FORMAT, predict_members
    from ..models.card import ModelCard, library_versions, utc_now
    from ..models.keras_onnx import average_onnx_bytes, keras_to_onnx_bytes
    from ..models.onnx import HybridOnnxModel

    directory = Path(directory)
    onnx_path, card_path = directory / f"{name}.onnx", directory / f"{name}.json"
    if not overwrite:
        for p in (onnx_path, card_path):
            if p.exists():
                raise ModelError(f"{p}: exists; pass overwrite=True (--overwrite) to replace it")
    members = list(keras_model) if isinstance(keras_model, (list, tuple)) else [keras_model]
    data = average_onnx_bytes([keras_to_onnx_bytes(m) for m in members])
    card = ModelCard(
        name=name, task="expression", format=FORMAT, file=onnx_path.name, sha256="", feature_set=feature_set,
        n_features=int(check_features.shape[1]), labels=list(labels), crop=dict(crop),
        versions=library_versions("tensorflow", "tf-keras", "onnx", "onnxruntime", "mediapipe", "numpy", "opencv-contrib-python"),
        created=utc_now(), path=card_path.resolve(), **card_fields,
    )
    card = replace(card, extra={**card.extra, "mirror_tta": bool(mirror_tta)})
    model = HybridOnnxModel(card, data)
    expected = predict_members(members, check_crops, check_features)
    if mirror_tta:
        if check_mirrored is None:
            raise ValueError("mirror_tta needs check_mirrored, the mirrored check faces' features")
        expected = 0.5 * (expected + predict_members(members, check_crops[:, :, ::-1], check_mirrored))
    got = model.predict_proba(check_features, check_crops, check_mirrored if mirror_tta else None)
    worst = float(np.max(np.abs(expected - got))) if len(got) else 0.0
    if worst > tolerance:
        raise ModelError(f"{name}: ONNX export disagrees with Keras (max difference {worst:.2e} > {tolerance:.0e})")
    metrics = {key: evaluate_table(model, table) for key, table in (evaluate_on or {}).items()}
    card = replace(card, extra={**card.extra, "export_max_difference": worst, "export_checked_faces": int(len(got))})
    with atomic_write(onnx_path) as f:
        f.write(data)
    card = replace(card, sha256=sha256_of(onnx_path))
    return card, metrics


def teacher_probabilities(cards: Sequence[str | Path], data: Any, *, held_out_images: int | None = None,
                          seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The mean probabilities of exported hybrid models (their card files) for every face of ``data``
    (:class:`meshfer.hybrid.HybridData`) and for its mirror image: the teacher of
    ``--option distill``. A teacher must have been trained with the same split (``seed`` and the
    number of ``held_out_images`` its card records), or it would pass on what it learnt from this
    run's held-out images."""
    from ..errors import ModelError
    from ..models.card import ModelCard
    from ..models.onnx import HybridOnnxModel

    plain, mirror = [], []
    for path in cards:
        card = ModelCard.load(path)
        td = card.training_data
        if seed is not None and td.get("seed") != seed:
            raise ModelError(f"{path}: teacher trained with split seed {td.get('seed')}, this run uses {seed}")
        if held_out_images is not None and td.get("held_out_images") != held_out_images:
            raise ModelError(f"{path}: teacher held out {td.get('held_out_images')} training images, this run "
                             f"{held_out_images}: not the same split")
        model = HybridOnnxModel(card)
        if list(card.labels) != list(data.labels):
            raise ModelError(f"{path}: teacher labels {card.labels} differ from {list(data.labels)}")
        if card.feature_set != data.feature_set:
            raise ModelError(f"{path}: teacher reads {card.feature_set}, this run {data.feature_set}")
        mirrored = model.needs_mirror
        plain.append(model.predict_proba(data.x, data.crops, data.x_mirror if mirrored else None))
        mirror.append(model.predict_proba(data.x_mirror, data.crops[:, :, ::-1], data.x if mirrored else None))
    return np.mean(plain, axis=0), np.mean(mirror, axis=0)


def _headline(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {f"{prefix}{k}": float(metrics[k]) for k in ("accuracy", "accuracy_on_faces", "coverage", "macro_f1")}
    out[f"{prefix}n_images"] = int(metrics["n_images"])
    out[f"{prefix}per_class_recall"] = {label: row["recall"] for label, row in metrics["per_class"].items() if row["support"]}
    out[f"{prefix}per_class_f1"] = {label: row["f1"] for label, row in metrics["per_class"].items() if row["support"]}
    return out


def train(name: str, config: Any) -> Any:
    """Train, check, evaluate and save the hybrid expression model (``meshfer train hybrid``).

    Options (``--option key=value``): ``photos_train_dir`` (ordinary photos added to training, 10 %
    of them held out with the FER-2013 held-out images), ``photos_dir`` (photos reported on as
    ``<folder name>_*``, e.g. ``muxspace_macro_f1``), ``exclude_copies`` (default true), ``feature_set``,
    ``teacher`` (exported hybrid models' card files, comma-separated, trained with the same split:
    each training face's target mixes its label with their probabilities, ``distill`` share, 0.5
    unless given; ``photos_teacher`` the same for the photos, default ``teacher``),
    any architecture option of :data:`meshfer.hybrid.DEFAULT_HPARAMS` (``branches=pixels``, ``stages``,
    ...) and any training option of :data:`meshfer.hybrid.DEFAULT_TRAINING` (``epochs``,
    ``max_minutes``, ``photo_weight``, ...). With ``finetune_from=MODEL`` an exported hybrid is
    fine-tuned on photos instead (:mod:`meshfer.training.hybrid_finetune`)."""
    from ..datasets import copies_of
    from ..hybrid import DEFAULT_HPARAMS, DEFAULT_TRAINING, HybridData, count_macs, fit_members, prepare_hybrid
    from .expression import EXPRESSION_LABELS

    if "finetune_from" in config.options:
        from .hybrid_finetune import train as train_finetuned

        return train_finetuned(name, config)
    start = time.perf_counter()
    options = dict(config.options)
    photos_train_dir = options.pop("photos_train_dir", None)
    photos_dir = options.pop("photos_dir", None)
    exclude_copies = as_bool(options.pop("exclude_copies", True))
    feature_set = str(options.pop("feature_set", HYBRID_FEATURE_SET))
    mirror_choice = str(options.pop("mirror_tta", "auto")).strip().lower()
    teachers = [p for p in str(options.pop("teacher", "")).split(",") if p.strip()]
    photos_teachers = [p for p in str(options.pop("photos_teacher", "")).split(",") if p.strip()] or teachers
    choose_mirror({"plain": 0.0, "mirror_averaged": 0.0}, mirror_choice)  # a wrong value fails before training
    hparams = {k: options.pop(k) for k in list(options) if k in DEFAULT_HPARAMS}
    training = {k: options.pop(k) for k in list(options) if k in DEFAULT_TRAINING}
    if "augment" in training:
        training["augment"] = as_bool(training["augment"])
    if options:
        valid = sorted([*DEFAULT_HPARAMS, *DEFAULT_TRAINING, "photos_train_dir", "photos_dir", "exclude_copies",
                        "feature_set", "mirror_tta", "teacher", "photos_teacher"])
        raise KeyError(f"unknown hybrid option(s) {', '.join(sorted(options))}; valid: {', '.join(valid)}")

    train_table = load_meshes(config.train_dir, config)
    labels = tuple(train_table.label_names) or EXPRESSION_LABELS
    val_table = load_meshes(config.val_dir, config) if config.val_dir is not None else None
    fit_table, held_table, left_out = split_for_training(
        train_table, val_table if exclude_copies else None, seed=config.seed
    )
    if val_table is None:  # no --val: report on the held-out part (also used for early stopping)
        val_table = held_table
    parts = [prepare_hybrid(fit_table, feature_set, labels, "fer2013")]
    held_parts = [prepare_hybrid(held_table, feature_set, labels, "fer2013")]
    training_data: dict[str, Any] = {
        "train_dir": short_path(config.train_dir),
        "train_images": len(fit_table) + len(held_table),
        "left_out_copies_of_validation_images": left_out,
        "fit_images": len(fit_table),
        "held_out_images": len(held_table),
        "held_out": "10% of the training images (stratified; byte-identical and augmented copies on one side), "
        "for early stopping; never the validation folder",
        "validation": short_path(config.val_dir) if config.val_dir is not None else "the held-out training images",
        "seed": config.seed,
        "limit_per_class": config.limit_per_class,
    }
    if photos_train_dir is not None:
        photos = load_meshes(Path(photos_train_dir), config)
        a, b = split_photos(photos, config.seed)
        parts.append(prepare_hybrid(photos.subset(a), feature_set, labels, PHOTOS))
        held_parts.append(prepare_hybrid(photos.subset(b), feature_set, labels, PHOTOS))
        training_data.update(photos_train_dir=short_path(photos_train_dir), photos_fit_images=int(len(a)),
                             photos_held_out_images=int(len(b)))
    train_data, held_data = HybridData.concat(parts), HybridData.concat(held_parts)
    if not len(train_data):
        raise ValueError(f"{config.train_dir}: no training faces")

    teacher = None
    if teachers:
        training.setdefault("distill", 0.5)
        teacher = tuple(np.zeros((len(train_data), len(labels)), np.float32) for _ in range(2))
        n_held = len(held_table)
        for dom, cards in (("fer2013", teachers), (PHOTOS, photos_teachers)):
            rows = np.flatnonzero(train_data.domain == dom)
            if len(rows):
                for t, p in zip(teacher, teacher_probabilities(cards, train_data.subset(rows), seed=config.seed,
                                                               held_out_images=n_held)):
                    t[rows] = p
        training_data["teacher"] = {"fer2013": [short_path(Path(p)) for p in teachers],
                                    PHOTOS: [short_path(Path(p)) for p in photos_teachers] if photos_train_dir else [],
                                    "note": "trained on the same fit images (same split); never on held-out, "
                                    "validation or reported photos"}
    results = fit_members(train_data, held_data, hparams, training, seed=config.seed, teacher=teacher)
    models = [r.model for r in results]

    # Mirror averaging (the face and its mirror image) doubles the network's time: it is kept when it
    # gains more than MIRROR_MIN_GAIN on the held-out images.
    ratios = results[0].ratios
    held_scores, plain, mirrored = mirror_scores(models, held_data, ratios)
    mirror_tta = choose_mirror(held_scores, mirror_choice)
    held_proba = mirrored if mirror_tta else plain

    evaluate_on = {"validation": val_table}
    copies = None
    if config.val_dir is not None:
        copies = copies_of(val_table.paths, train_table.paths)
        evaluate_on["unseen"] = val_table.subset(np.flatnonzero(~copies))
    if photos_dir is not None:
        evaluate_on["photos"] = load_meshes(Path(photos_dir), config)
    val_data = prepare_hybrid(val_table.subset(np.arange(min(len(val_table), 256))), feature_set, labels)
    check = val_data if len(val_data) else held_data.subset(np.arange(min(len(held_data), 256)))
    from ..crops import DEFAULT_CROP, CropSpec

    crop_spec = CropSpec.from_dict(train_table.meta["crop"]) if train_table.meta.get("crop") else DEFAULT_CROP
    hp = {**DEFAULT_HPARAMS, **hparams}
    tr = {**DEFAULT_TRAINING, **training}
    card, scores = export_hybrid(
        models, config.output_dir, name=name, labels=labels, feature_set=feature_set,
        check_crops=check.crops, check_features=check.x, crop=crop_spec.to_dict(),
        mirror_tta=mirror_tta, check_mirrored=check.x_mirror,
        evaluate_on=evaluate_on, overwrite=config.overwrite, default=config.default, description=DESCRIPTION,
        estimator=f"{len(models)} x hybrid network ({hp['branches']}: mobile-style CNN, stages {hp['stages']}, + dense "
        f"mesh branch), averaged; {models[0].count_params():,} parameters and {count_macs(models[0]) / 1e6:.1f}M "
        "multiply-adds each",
        landmarker_sha256=str(train_table.meta.get("landmarker_sha256", "")),
    )
    metrics = _card_metrics(scores, copies, _photos_tag(Path(photos_dir)) if photos_dir is not None else "",
                            held_data, held_proba, labels)
    if photos_dir is not None:
        training_data["photos"] = short_path(photos_dir)
    training_data["note"] = (
        "metrics: every validation image counted (no face found = wrong); options and the stopping epoch were "
        "chosen on held-out training images, never on the validation folder or the photos reported on; unseen_*: "
        "the validation images that are not byte-identical copies of an image of the training folder"
    )
    from dataclasses import replace

    card = replace(
        card, metrics=metrics, training_data=training_data,
        extra={**card.extra, "hparams": hp, "training": tr, "members": [
                   {"seed": config.seed + i, "best_epoch": r.best_epoch, "averaged": r.averaged, "epochs_run": len(r.history),
                    "stopped": r.stopped, "fit_seconds": round(r.seconds, 1), "history": r.history}
                   for i, r in enumerate(results)],
               "held_out_selection_scores": held_scores, "mirror_tta_choice": mirror_choice,
               "mirror_min_gain": MIRROR_MIN_GAIN, **({"domain_prior_ratios": ratios} if ratios else {}),
               "total_seconds": round(time.perf_counter() - start, 1),
               "parameters": int(sum(m.count_params() for m in models)),
               "multiply_adds": int(sum(count_macs(m) for m in models))},
    )
    card.save(Path(config.output_dir) / f"{name}.json")
    return card


def _card_metrics(scores: dict[str, Any], copies: np.ndarray | None, photos_tag: str, held_data: Any,
                  held_proba: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The card's metrics: ``scores`` (evaluate_table results: validation, unseen, photos) and the
    held-out training images' (``held_proba``: the model's probabilities in their domains)."""
    from ..evaluation import classification_metrics, unseen_summary

    metrics = _headline(scores["validation"])
    if "unseen" in scores:
        assert copies is not None
        metrics.update(unseen_summary(scores["unseen"], int(copies.sum())))
    if "photos" in scores:
        metrics.update(_headline(scores["photos"], f"{photos_tag}_"))
    held_pred = held_proba.argmax(axis=1)
    held_metrics = classification_metrics(held_data.y, held_pred, list(labels))
    metrics["held_out_macro_f1"] = float(held_metrics["macro_f1"])
    metrics["held_out_accuracy"] = float(held_metrics["accuracy"])
    fer_rows = held_data.domain == "fer2013"
    if fer_rows.any() and not fer_rows.all():
        metrics["held_out_fer2013_accuracy"] = float(np.mean(held_pred[fer_rows] == held_data.y[fer_rows]))
    return metrics


def reselect_mirror(card_path: str | Path, config: Any, photos_train_dir: str | Path | None = None,
                    photos_dir: str | Path | None = None, min_gain: float = MIRROR_MIN_GAIN) -> Any:
    """Apply the mirror-averaging rule (``mirror_tta=auto`` with ``min_gain``) again to an exported
    hybrid model, from the held-out scores its card recorded at training, without training again;
    when the choice changes, the card's metrics are computed anew with the exported model, on the
    data of ``config`` (the same folders as at training) and saved. Returns the card."""
    from dataclasses import replace

    from ..datasets import copies_of
    from ..evaluation import evaluate_table
    from ..hybrid import adjust_to_domains
    from ..models.card import ModelCard
    from ..models.onnx import HybridOnnxModel

    card = ModelCard.load(card_path)
    held_scores = card.extra["held_out_selection_scores"]
    mirror_tta = choose_mirror(held_scores, "auto", min_gain)
    card = replace(card, extra={**card.extra, "mirror_tta": mirror_tta, "mirror_tta_choice": "auto",
                                "mirror_min_gain": min_gain})
    if mirror_tta == bool(ModelCard.load(card_path).extra.get("mirror_tta")):
        return card
    model = HybridOnnxModel(card)
    train_table = load_meshes(config.train_dir, config)
    val_table = load_meshes(config.val_dir, config)
    copies = copies_of(val_table.paths, train_table.paths)
    tables = {"validation": val_table, "unseen": val_table.subset(np.flatnonzero(~copies))}
    if photos_dir is not None:
        tables["photos"] = load_meshes(Path(photos_dir), config)
    scores = {key: evaluate_table(model, table) for key, table in tables.items()}
    photos = load_meshes(Path(photos_train_dir), config) if photos_train_dir is not None else None
    held = held_out_data(train_table, val_table, photos, card.feature_set, card.labels, seed=config.seed)
    proba = model.predict_proba(held.x, held.crops, held.x_mirror if mirror_tta else None)
    proba = adjust_to_domains(proba, held.domain, card.extra.get("domain_prior_ratios"))
    tag = _photos_tag(Path(photos_dir)) if photos_dir is not None else ""
    metrics = _card_metrics(scores, copies, tag, held, proba, card.labels)
    card = replace(card, metrics={**card.metrics, **metrics})
    card.save(card_path)
    return card


def _photos_tag(path: Path) -> str:
    tag = path.name.split("-")[0].replace(" ", "_").lower()
    return tag or "photos"
