"""Proposing eye-state and mouth-state labels from face meshes, and sorting images into label
folders for a person to review (``meshfer sort eyes|mouth SRC_DIR DEST_DIR``).

The proposals come from MediaPipe's blendshape scores (and, for the mouth, the inner-lip gap of
the mesh), with deliberately conservative thresholds: an image is put in a label folder only when
the scores are clearly on one side, everything in between goes to ``unsure/``. Images are
copied, never moved, and no existing file is ever overwritten.

How the thresholds were chosen: on FER-2013 train (28,207 faces), random samples of 24 images
were viewed in bins of each score (e.g. min(eyeBlinkLeft, eyeBlinkRight) in [0.3, 0.4), [0.4, 0.5),
[0.5, 0.6), >= 0.6); a label's cut was put where (nearly) every image of the bin showed that
state, and the bins with a visible mix became the ``unsure`` band. Two cuts were moved once, after
the hand-checked real photos showed real closed eyes and slightly parted lips being missed, and a
second, larger look at the FER bins supported the move: closed eyes from blink >= 0.60 to 0.50
(about 34 of 40 images in [0.5, 0.6) closed), open mouths from lip gap >= 0.15 to 0.12. The values
are in :class:`EyeRules` and :class:`MouthRules` (the notebooks list them). A person's review of
the folders is still expected: the rules are a first pass, not ground truth.

Sides are the subject's, as in MediaPipe's names: eyeBlinkLeft scores the subject's left eye
(landmarks 362/263, on the right of an unmirrored photo).
"""

from __future__ import annotations

import csv
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._io import FATAL_WRITE_ERRNOS, check_writable, os_reason
from .errors import MeshferError, OutputError
from .landmarks import BLENDSHAPE_NAMES
from .meshtable import STATUS_OK, MeshTable

__all__ = [
    "EYE_LABELS",
    "MOUTH_LABELS",
    "UNSURE",
    "KINDS",
    "EyeRules",
    "MouthRules",
    "eye_scores",
    "eye_states",
    "propose_eye_labels",
    "mouth_scores",
    "propose_mouth_labels",
    "propose_labels",
    "SortResult",
    "sort_table",
    "sort_images",
]

EYE_LABELS = ("closed", "narrowed", "open", "wide")
MOUTH_LABELS = ("closed", "open")
#: Folder (and decision) for images whose scores are not clearly on one side.
UNSURE = "unsure"
#: Sort kind -> (label-folder prefix, labels).
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {"eyes": ("eye_", EYE_LABELS), "mouth": ("mouth_", MOUTH_LABELS)}


@dataclass(frozen=True)
class EyeRules:
    """Per-eye thresholds on the eye's eyeBlink, eyeSquint and eyeWide scores. An image gets a
    label only when both eyes get it; an eye matching no rule is unsure."""

    closed_blink: float = 0.50  # closed: blink >= this
    wide_wide: float = 0.15  # wide: eyeWide >= this and blink < open_blink
    narrowed_blink: tuple[float, float] = (0.25, 0.45)  # narrowed: blink in [lo, hi) ...
    narrowed_squint: float = 0.60  # ... or squint >= this with blink < hi; and eyeWide < open_wide
    open_blink: float = 0.20  # open: blink < this, squint < open_squint, eyeWide < open_wide
    open_squint: float = 0.40
    open_wide: float = 0.08


@dataclass(frozen=True)
class MouthRules:
    """Thresholds on jawOpen, the means of mouthUpperUp and mouthLowerDown (left and right), and
    the inner-lip gap (landmarks 13-14 / nose-to-forehead distance)."""

    open_gap: float = 0.12  # open: gap >= this and max(jawOpen, upper_up, lower_down) >= open_score
    open_score: float = 0.30
    closed_gap: float = 0.06  # closed: gap < this and jawOpen, upper_up, lower_down all < closed_score
    closed_score: float = 0.10


def _bs(blendshapes: np.ndarray, name: str) -> np.ndarray:
    return np.asarray(blendshapes, dtype=np.float32).reshape(-1, len(BLENDSHAPE_NAMES))[:, BLENDSHAPE_NAMES.index(name)]


def eye_scores(blendshapes: np.ndarray) -> dict[str, np.ndarray]:
    """The blendshape scores the eye rules read: blink/squint/wide of the subject's left and right eye."""
    return {
        f"{score}_{side}": _bs(blendshapes, f"eye{score.capitalize()}{side.capitalize()}")
        for score in ("blink", "squint", "wide")
        for side in ("left", "right")
    }


def eye_states(blendshapes: np.ndarray, rules: EyeRules = EyeRules()) -> np.ndarray:
    """(N, 2) proposed state of the subject's [left, right] eye: a label of :data:`EYE_LABELS` or
    ``unsure``; NaN scores (no face) give ``unsure``."""
    s = eye_scores(blendshapes)
    n = len(s["blink_left"])
    out = np.full((n, 2), UNSURE, dtype=object)
    lo, hi = rules.narrowed_blink
    for k, side in enumerate(("left", "right")):
        blink, squint, wide = s[f"blink_{side}"], s[f"squint_{side}"], s[f"wide_{side}"]
        matches = {
            "closed": blink >= rules.closed_blink,
            "wide": (wide >= rules.wide_wide) & (blink < rules.open_blink),
            "narrowed": (blink < hi) & ((blink >= lo) | (squint >= rules.narrowed_squint)) & (wide < rules.open_wide),
            "open": (blink < rules.open_blink) & (squint < rules.open_squint) & (wide < rules.open_wide),
        }
        n_matches = sum(m.astype(int) for m in matches.values())
        for label, m in matches.items():
            out[m & (n_matches == 1), k] = label
    return out.astype(str)


def propose_eye_labels(blendshapes: np.ndarray, rules: EyeRules = EyeRules()) -> np.ndarray:
    """(N,) proposed image label: the eyes' common state, ``unsure`` when they differ or are unclear."""
    states = eye_states(blendshapes, rules)
    return np.where(states[:, 0] == states[:, 1], states[:, 0], UNSURE).astype(str)


def mouth_scores(landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The scores the mouth rules read: jaw_open, upper_up, lower_down and lip_gap."""
    from .features import mouth_features

    return {
        "jaw_open": _bs(blendshapes, "jawOpen"),
        "upper_up": 0.5 * (_bs(blendshapes, "mouthUpperUpLeft") + _bs(blendshapes, "mouthUpperUpRight")),
        "lower_down": 0.5 * (_bs(blendshapes, "mouthLowerDownLeft") + _bs(blendshapes, "mouthLowerDownRight")),
        "lip_gap": mouth_features(landmarks, image_sizes)[:, 2],
    }


def propose_mouth_labels(
    landmarks: np.ndarray, blendshapes: np.ndarray, image_sizes: np.ndarray | None = None, rules: MouthRules = MouthRules()
) -> np.ndarray:
    """(N,) proposed label: ``open``, ``closed`` or ``unsure`` (also for NaN scores)."""
    s = mouth_scores(landmarks, blendshapes, image_sizes)
    strongest = np.maximum(np.maximum(s["jaw_open"], s["upper_up"]), s["lower_down"])
    is_open = (s["lip_gap"] >= rules.open_gap) & (strongest >= rules.open_score)
    is_closed = (s["lip_gap"] < rules.closed_gap) & (strongest < rules.closed_score)
    out = np.full(len(strongest), UNSURE, dtype=object)
    out[is_open] = "open"
    out[is_closed] = "closed"
    return out.astype(str)


def _check_kind(kind: str) -> tuple[str, tuple[str, ...]]:
    if kind not in KINDS:
        raise MeshferError(f"unknown sort kind {kind!r}; valid: {', '.join(KINDS)}")
    return KINDS[kind]


def propose_labels(kind: str, table: MeshTable, rules: EyeRules | MouthRules | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Proposed label of every row of ``table`` (``unsure`` for rows without a face) and the
    scores behind it, for ``kind`` 'eyes' or 'mouth'."""
    _check_kind(kind)
    if kind == "eyes":
        r = rules if isinstance(rules, EyeRules) else EyeRules()
        return propose_eye_labels(table.blendshapes, r), eye_scores(table.blendshapes)
    r = rules if isinstance(rules, MouthRules) else MouthRules()
    return (
        propose_mouth_labels(table.landmarks, table.blendshapes, table.image_sizes, r),
        mouth_scores(table.landmarks, table.blendshapes, table.image_sizes),
    )


# ------------------------------------------------------------------------------------------------
# Copying


@dataclass
class SortResult:
    """What :func:`sort_table` did: one record per image (source, status, decision, destination,
    action, reason and the scores), the counts per decision, and where the CSV was written."""

    kind: str
    dest: Path
    csv_path: Path
    records: list[dict[str, Any]]
    counts: dict[str, int]
    rules: dict[str, Any] = field(default_factory=dict)

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.records)


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            while True:
                ca, cb = fa.read(1 << 16), fb.read(1 << 16)
                if ca != cb:
                    return False
                if not ca:
                    return True
    except OSError:
        return False


def _copy_new(src: Path, folder: Path) -> tuple[Path, str]:
    """Copy ``src`` into ``folder`` without overwriting anything: an identical file already
    there is kept ('already present'); a different file of that name makes the copy take the next
    free name ``<stem>-2<ext>``, ``-3``, ... Returns (destination, action)."""
    stem, suffix = src.stem, src.suffix
    k = 1
    while True:
        target = folder / (src.name if k == 1 else f"{stem}-{k}{suffix}")
        if target.exists():
            if _same_file_content(src, target):
                return target, "already present"
            k += 1
            continue
        with src.open("rb") as fin:
            try:
                fout = target.open("xb")  # 'x': never replaces a file that appeared meanwhile
            except FileExistsError:
                continue
            try:
                with fout:
                    shutil.copyfileobj(fin, fout)
            except BaseException:
                target.unlink(missing_ok=True)  # our own partial copy
                raise
        shutil.copystat(src, target)
        return target, "copied"


def _free_name(path: Path) -> Path:
    k = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return candidate


def _stderr_line(message: str) -> None:
    try:
        from tqdm.auto import tqdm

        tqdm.write(f"meshfer: {message}", file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(f"meshfer: {message}", file=sys.stderr)


def sort_table(
    kind: str,
    table: MeshTable,
    dest: str | Path,
    *,
    rules: EyeRules | MouthRules | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    on_problem: Callable[[str], None] | None = _stderr_line,
) -> SortResult:
    """Copy every image of ``table`` (whose meshes are known) into ``dest/<prefix><label>/``
    or ``dest/unsure/`` by its proposed label, and write ``dest/sort-<kind>.csv`` (a numbered
    name if that exists) with the scores and decisions.

    Images without a face, or that cannot be read, are not copied: each gives one line to
    ``on_problem`` (None: silent) and a CSV row. With ``cache_dir``, the meshes of the copies are
    added to the extraction cache of ``dest`` (see :func:`meshfer.extract.cache_file`), so that
    extracting the label folders afterwards is instant.
    """
    prefix, labels = _check_kind(kind)
    dest = Path(dest).expanduser().absolute()
    _check_dest(dest, kind)
    for folder in [f"{prefix}{label}" for label in labels] + [UNSURE]:
        try:
            (dest / folder).mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"{dest / folder}: exists and is not a folder") from None
        except OSError as exc:
            raise OutputError(f"{dest / folder}: cannot create the folder ({os_reason(exc)})") from None
    proposed, scores = propose_labels(kind, table, rules)
    fatal: OSError | None = None
    rules_used = rules or (EyeRules() if kind == "eyes" else MouthRules())

    records: list[dict[str, Any]] = []
    copied_rows: list[int] = []
    copied_paths: list[Path] = []
    if on_problem is not None:  # known before copying: reported first, not in the middle of a progress bar
        for i in np.flatnonzero(table.status != STATUS_OK):
            on_problem(f"{table.paths[i]}: {str(table.errors[i]) or str(table.status[i])} (not sorted)")
    rows = range(len(table))
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, unit="img", desc=f"Sorting ({kind})", dynamic_ncols=True)
    for i in rows:
        src = Path(str(table.paths[i]))
        rec: dict[str, Any] = {"source": str(src), "status": str(table.status[i])}
        if table.status[i] != STATUS_OK:
            reason = str(table.errors[i]) or str(table.status[i])
            rec.update(decision="", destination="", action="skipped", reason=reason)
        elif fatal is not None:  # the destination cannot take more: the rest is not copied
            rec.update(decision=str(proposed[i]), destination="", action="skipped",
                       reason=f"not copied ({os_reason(fatal)})")
        else:
            decision = str(proposed[i])
            folder = dest / (UNSURE if decision == UNSURE else f"{prefix}{decision}")
            try:
                target, action = _copy_new(src, folder)
                rec.update(decision=decision, destination=str(target), action=action, reason="")
                copied_rows.append(i)
                copied_paths.append(target)
            except OSError as exc:
                if exc.errno in FATAL_WRITE_ERRNOS:
                    fatal = exc
                    rec.update(decision=decision, destination="", action="skipped", reason=f"not copied ({os_reason(exc)})")
                else:
                    reason = f"cannot copy ({exc.strerror or exc})"
                    rec.update(status="unreadable", decision="", destination="", action="skipped", reason=reason)
                    if on_problem is not None:
                        on_problem(f"{src}: {reason} (not sorted)")
        rec.update({k: (round(float(v[i]), 4) if np.isfinite(v[i]) else "") for k, v in scores.items()})
        records.append(rec)

    csv_path = _free_name(dest / f"sort-{kind}.csv")
    columns = ["source", "status", "decision", "destination", "action", "reason", *scores]
    csv_error: OSError | None = None
    try:
        f = csv_path.open("x", newline="", encoding="utf-8", errors="surrogateescape")  # names as on disk
    except OSError as exc:
        f, csv_error = None, exc
    if f is not None:
        try:
            with f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(records)
        except OSError as exc:
            csv_error = exc
            csv_path.unlink(missing_ok=True)  # ours, cut short
    copied = sum(1 for r in records if r["action"] == "copied")
    if fatal is not None or csv_error is not None:
        error = fatal or csv_error
        assert error is not None
        csv_note = "" if csv_error is None else f", and the table {csv_path.name} could not be written"
        raise OutputError(
            f"{dest}: cannot write ({os_reason(error)}) after copying {copied} of {len(records)} images; the copies made "
            f"are complete{csv_note}; free some space and run the same command again to finish (copies already there are kept)"
        )
    if cache_dir is not None and copied_rows:
        try:
            _seed_cache(table, copied_rows, copied_paths, dest, prefix, labels, Path(cache_dir))
        except (OSError, MeshferError) as exc:
            if on_problem is not None:
                on_problem(f"{cache_dir}: the meshes of the copies were not added to the cache ({os_reason(exc)})")
    counts = {label: 0 for label in (*labels, UNSURE)}
    for rec in records:
        key = rec["decision"] or "skipped"
        counts[key] = counts.get(key, 0) + 1
    return SortResult(kind, dest, csv_path, records, counts, asdict(rules_used))


def _check_dest(dest: Path, kind: str) -> None:
    """A destination that is a folder (or can be made one) and takes files; else OutputError."""
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest}: exists and is not a folder (the destination must be a folder)")
    check_writable(dest / f"sort-{kind}.csv", what="destination")


def _seed_cache(
    table: MeshTable, rows: list[int], paths: list[Path], dest: Path, prefix: str, labels: tuple[str, ...], cache_dir: Path
) -> None:
    """Add the meshes of the copies to dest's extraction cache (keyed by path, size and mtime
    like every cache entry; a copy a person later moves is simply extracted again)."""
    from .datasets import group_of
    from .extract import cache_file

    sub = table.subset(np.asarray(rows, dtype=np.int64))
    stats = [p.stat() for p in paths]
    folder_labels = []
    for p in paths:
        name = p.parent.name
        folder_labels.append(name[len(prefix):] if name.startswith(prefix) else "")
    meta = {**table.meta, "labels": list(labels), "root": str(dest), "prefix": prefix, "skipped": []}
    meta.pop("timing", None)
    seeded = replace(
        sub,
        paths=np.array([str(p) for p in paths], dtype=str),
        labels=np.array(folder_labels, dtype=str),
        groups=np.array([group_of(p, dest) for p in paths], dtype=str),
        file_sizes=np.array([s.st_size for s in stats], dtype=np.int64),
        mtimes_ns=np.array([s.st_mtime_ns for s in stats], dtype=np.int64),
        meta=meta,
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_file(dest, cache_dir)
    if target.exists() and MeshTable.is_meshtable_file(target):
        old = MeshTable.load(target)
        same = all(old.meta.get(k) == meta.get(k) for k in ("landmarker_sha256", "attempts"))
        if same:
            seeded = MeshTable.concat([old, seeded], meta=meta)
    elif target.exists():
        return  # a foreign file: leave it alone
    seeded.save(target)


def sort_images(
    kind: str,
    source: str | Path,
    dest: str | Path,
    *,
    cache_dir: str | Path | None = None,
    per_class: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    options: Any = None,
    rules: EyeRules | MouthRules | None = None,
    progress: bool = True,
    on_problem: Callable[[str], None] | None = _stderr_line,
) -> SortResult:
    """Extract the face meshes of the images in ``source`` (through the mesh cache in
    ``cache_dir``, shared with ``meshfer extract``/``train`` and the notebooks) and sort them into
    ``dest`` (see :func:`sort_table`).

    A ``source`` with ``face_<label>`` folders is read like a data root (``per_class`` limits it
    to a reproducible sample per expression); any other folder is searched for images
    recursively. Files that are not images are reported through ``on_problem`` and skipped.
    """
    from .datasets import EXPRESSION_PREFIX, scan_paths
    from .extract import cache_file, extract, extract_folder

    _check_kind(kind)
    source = Path(source).expanduser()
    dest_abs = Path(dest).expanduser().absolute()
    if not source.is_dir():
        raise MeshferError(f"{source}: no such folder")
    src_abs = source.absolute()
    # A data root of face_<label> folders is read through those folders only: a destination beside them
    # (the repository's 'Eye Closeness' when the data set lies at its root) is not read back.
    face_root = any(c.is_dir() and c.name.startswith(EXPRESSION_PREFIX) for c in source.iterdir())
    if dest_abs == src_abs or (src_abs in dest_abs.parents and not (
            face_root and not dest_abs.relative_to(src_abs).parts[0].startswith(EXPRESSION_PREFIX))):
        raise MeshferError(f"{dest}: the destination must not be inside the source folder {source}")
    _check_dest(dest_abs, kind)
    if any(c.is_dir() and c.name.startswith(EXPRESSION_PREFIX) for c in source.iterdir()):
        table = extract_folder(
            source, cache_dir, per_class=per_class, seed=seed, workers=workers, options=options, progress=progress
        )
    else:
        dataset = scan_paths([source])
        if not dataset.records:
            raise MeshferError(f"{source}: holds no images")
        output = cache_file(source, cache_dir) if cache_dir is not None else None
        table = extract(dataset, output, workers=workers, options=options, progress=progress, other_rows="keep")
    if on_problem is not None:
        for problem in table.meta.get("skipped", []):
            on_problem(f"{problem['file']}: {problem['reason']} (not sorted)")
    return sort_table(kind, table, dest, rules=rules, cache_dir=cache_dir, progress=progress, on_problem=on_problem)
