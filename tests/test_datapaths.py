"""meshfer.datapaths: where the notebooks and the command line find the data (environment, face_* folders
at the repository root, data/fer2013), and the fixed split of a single data root; the quick-start
commands around it (meshfer evaluate/extract --split, meshfer train without --val, meshfer sort's
default destination, augment.py started from elsewhere)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FER_TRAIN, FER_VAL, LABELS, LANDMARKER, REPO, sample_images

DATA_VARS = ["MESHFER_TRAIN_DIR", "MESHFER_VAL_DIR", "MESHFER_PHOTOS_DIR", "MESHFER_SAMPLE", "MESHFER_OUTPUT_DIR",
             "MESHFER_MESH_CACHE", "MESHFER_EYE_DIR", "MESHFER_MOUTH_DIR", "MESHFER_HANDCHECK",
             "MESHFER_AUGMENTED_DIR", "MESHFER_SPLIT_DIR"]


@pytest.fixture(autouse=True)
def _no_data_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DATA_VARS:
        monkeypatch.delenv(name, raising=False)


def _fill(root: Path, per_class: int, source: Path = FER_TRAIN, labels: list[str] | None = None) -> Path:
    """``root/face_<label>`` folders with copies of ``per_class`` real images each."""
    for label, files in sample_images(source, per_class).items():
        if labels is not None and label not in labels:
            continue
        (root / f"face_{label}").mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, root / f"face_{label}" / f.name)
    return root


def _fake_repo(path: Path) -> Path:
    """A folder that meshfer.datapaths takes for a checkout of the repository, with an approach folder."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "pyproject.toml", path / "pyproject.toml")
    (path / "meshfer").mkdir(exist_ok=True)
    (path / "meshfer" / "__init__.py").write_text("")
    (path / "SVM").mkdir(exist_ok=True)
    return path


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------------
# The fixed split


def test_split_keeps_duplicates_and_augmented_copies_on_one_side_and_is_fixed(tmp_path: Path) -> None:
    from meshfer.datapaths import fixed_split

    root = _fill(tmp_path / "data", 20)
    sad = sorted((root / "face_sad").iterdir())
    # The same picture under another name (also in another class), and augmented copies (other bytes).
    for i, src in enumerate(sad[:6]):
        shutil.copy2(src, root / "face_sad" / f"twin_{i}.jpg")
        (root / "face_sad" / f"augmented_{src.name}").write_bytes(src.read_bytes() + b"1")
        (root / "face_sad" / f"augmented2_{src.name}").write_bytes(src.read_bytes() + b"2")
    shutil.copy2(sad[7], root / "face_angry" / "same_as_a_sad_one.jpg")

    split = fixed_split(root)
    side = {r.path: r.split for r in split.rows}
    for i, src in enumerate(sad[:6]):
        sides = {side[f"face_sad/{src.name}"], side[f"face_sad/twin_{i}.jpg"]}
        assert len(sides) == 1  # byte-identical pictures: one side
        copies = {side[f"face_sad/augmented_{src.name}"], side[f"face_sad/augmented2_{src.name}"]}
        assert copies == ({"unused"} if sides == {"validation"} else sides)  # never in training beside a validation source
    assert side["face_angry/same_as_a_sad_one.jpg"] == side[f"face_sad/{sad[7].name}"]
    # Stratified: 10 % of each class's pictures (2 of about 20), a unit counted once, in the class of its first image.
    units = {label: {r.group for r in split.side("validation") if r.group.startswith(f"face_{label}/")} for label in LABELS}
    assert {label: len(u) for label, u in units.items()} == {label: 2 for label in LABELS}
    assert {r.split for r in split.rows} <= {"train", "validation", "unused"}
    # The same files give the same split: a second run, and a copy of the data elsewhere.
    assert fixed_split(root).csv_text() == split.csv_text()
    elsewhere = shutil.copytree(root, tmp_path / "copy" / "data")
    assert fixed_split(elsewhere).csv_text() == split.csv_text()
    assert fixed_split(root, seed=1).csv_text() != split.csv_text()


def test_split_of_a_tiny_class_and_of_no_data(tmp_path: Path) -> None:
    from meshfer.datapaths import fixed_split
    from meshfer.errors import DatasetError

    root = _fill(tmp_path / "data", 3, labels=["happy", "sad"])
    one = root / "face_fear"
    one.mkdir()
    shutil.copy2(sample_images(FER_TRAIN, 1)["fear"][0], one)
    split = fixed_split(root)
    by_label = {label: [r.split for r in split.rows if r.label == label] for label in ("fear", "happy", "sad")}
    assert by_label["fear"] == ["train"]  # a class with one picture stays in training
    assert sorted(by_label["happy"]) == ["train", "train", "validation"]
    with pytest.raises(DatasetError, match="no 'face_<label>' folders"):
        fixed_split(tmp_path / "data" / "face_sad")


def test_split_view_links_the_images_and_follows_changes(tmp_path: Path) -> None:
    from meshfer.datapaths import fixed_split, split_view
    from meshfer.datasets import scan_dataset
    from meshfer.errors import OutputError

    root = _fill(tmp_path / "data", 10)
    first = sorted((root / "face_happy").iterdir())[0]
    shutil.copy2(first, root / "face_happy" / f"augmented_{first.name}")
    view = split_view(fixed_split(root), tmp_path / "views")
    assert view.train_dir == tmp_path / "views" / "data-train" and view.val_dir == tmp_path / "views" / "data-validation"
    rows = _rows(view.csv_path)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows) and len(rows) == 71
    train, val = scan_dataset(view.train_dir), scan_dataset(view.val_dir)
    assert train.labels == val.labels == LABELS
    assert len(train) == sum(r["split"] == "train" for r in rows) and len(val) == sum(r["split"] == "validation" for r in rows)
    assert {Path(r.path).resolve() for r in train.records} <= {p.resolve() for p in root.rglob("*.jpg")}
    # Groups in the view are those of the root: an augmented copy and its source share one.
    groups = {r.path.name: r.group for r in (*train.records, *val.records)}
    if f"augmented_{first.name}" in groups:
        assert groups[f"augmented_{first.name}"] == groups[first.name] == f"face_happy/{first.name}"
    before = view.csv_path.stat().st_mtime_ns
    assert split_view(fixed_split(root), tmp_path / "views").csv_path.stat().st_mtime_ns == before  # unchanged: untouched
    # A new image is linked, a removed one unlinked; the images themselves are never touched.
    extra = sample_images(FER_TRAIN, 1, offset=50)["sad"][0]
    shutil.copy2(extra, root / "face_sad" / "new.jpg")
    gone = sorted((root / "face_angry").iterdir())[-1]
    gone.unlink()
    view = split_view(fixed_split(root), tmp_path / "views")
    names = {p.name for side in (view.train_dir, view.val_dir) for p in side.rglob("*.jpg")}
    assert "new.jpg" in names and gone.name not in names
    assert len(list(root.rglob("*.jpg"))) == 71
    # A folder that meshfer did not make is never used.
    (tmp_path / "other" / "data-train").mkdir(parents=True)
    (tmp_path / "other" / "data-train" / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="not made by meshfer"):
        split_view(fixed_split(root), tmp_path / "other")
    assert (tmp_path / "other" / "data-train" / "mine.txt").read_text() == "keep"


# ------------------------------------------------------------------------------------------------
# Resolution


def test_resolve_prefers_given_values_then_environment_then_the_layout(tmp_path: Path, monkeypatch) -> None:
    from meshfer.datapaths import repo_root, resolve

    repo = _fake_repo(tmp_path / "repo")
    notebook_dir = repo / "SVM"
    assert repo_root(notebook_dir) == repo
    fer = repo / "data" / "fer2013"
    _fill(fer / "train", 2)
    _fill(fer / "validation", 2, FER_VAL)
    # data/fer2013 under the repository, found from a notebook's folder.
    paths = resolve(start=notebook_dir)
    assert (paths.train_dir, paths.val_dir, paths.view) == (fer / "train", fer / "validation", None)
    assert paths.output_dir == notebook_dir / "output" and paths.mesh_cache == repo / "cache"
    assert paths.photos_dir == repo / "data" / "photos" and paths.sample is None
    assert paths.eye_dir == notebook_dir / "output" / "eyes"
    # face_* folders at the repository root come first: one root, split.
    _fill(repo, 12)
    paths = resolve(start=notebook_dir)
    assert paths.view is not None and paths.view.split.root == repo
    assert paths.train_dir == repo / "output" / "split" / "repo-train"
    assert paths.view.csv_path == repo / "output" / "split" / "repo-split.csv"
    assert "repository root" in paths.source
    # Environment variables come before the layout; a training folder alone is split.
    monkeypatch.setenv("MESHFER_TRAIN_DIR", str(fer / "train"))
    monkeypatch.setenv("MESHFER_SAMPLE", "3")
    paths = resolve(start=notebook_dir)
    assert paths.view is not None and paths.view.split.root == fer / "train"
    assert paths.train_dir.name == "train-train" and paths.sample == 3
    monkeypatch.setenv("MESHFER_VAL_DIR", str(fer / "validation"))
    paths = resolve(start=notebook_dir)
    assert (paths.train_dir, paths.val_dir, paths.view) == (fer / "train", fer / "validation", None)
    # Given values come first.
    paths = resolve(start=notebook_dir, train_dir=str(repo), sample="2", output_dir=tmp_path / "out")
    assert paths.view is not None and paths.view.split.root == repo and paths.sample == 2
    assert paths.output_dir == tmp_path / "out" and paths.augmented_dir == tmp_path / "out" / "train-augmented"


def test_resolve_errors_say_what_to_do(tmp_path: Path, monkeypatch) -> None:
    from meshfer.datapaths import resolve
    from meshfer.errors import DatasetError, MeshferError

    repo = _fake_repo(tmp_path / "repo")
    with pytest.raises(DatasetError, match=r"no data found: put the data set's face_<label> folders .* at the repository root"):
        resolve(start=repo / "SVM")
    with pytest.raises(DatasetError, match="nowhere: no such folder"):
        resolve(start=repo, train_dir=tmp_path / "nowhere", val_dir=tmp_path / "nowhere")
    with pytest.raises(MeshferError, match="VAL_DIR is given without TRAIN_DIR"):
        resolve(start=repo, val_dir=tmp_path)
    monkeypatch.setenv("MESHFER_SAMPLE", "a few")
    _fill(repo, 2)
    with pytest.raises(MeshferError, match="MESHFER_SAMPLE: SAMPLE must be a whole number"):
        resolve(start=repo)


def test_label_folders_of_the_original_layout(tmp_path: Path) -> None:
    from meshfer.datapaths import resolve

    repo = _fill(_fake_repo(tmp_path / "repo"), 2)
    (repo / "Eye Closeness").mkdir()
    paths = resolve(start=repo / "SVM")
    assert paths.eye_dir == repo / "SVM" / "output" / "eyes"  # no eye_* folders: built by the notebooks
    (repo / "Eye Closeness" / "eye_open").mkdir()
    (repo / "Mouth Closeness" / "mouth_open").mkdir(parents=True)
    paths = resolve(start=repo / "Eye Closeness")
    assert paths.eye_dir == repo / "Eye Closeness" and paths.mouth_dir == repo / "Mouth Closeness"


def test_notebook_parameters_fill_the_namespace_and_show_it(tmp_path: Path, monkeypatch) -> None:
    from meshfer.datapaths import notebook_parameters

    repo = _fill(_fake_repo(tmp_path / "repo"), 12)
    monkeypatch.chdir(repo / "SVM")
    namespace = {"TRAIN_DIR": None, "VAL_DIR": None, "SAMPLE": 4, "OUTPUT_DIR": None, "MESH_CACHE": "elsewhere",
                 "OTHER": "untouched"}
    paths = notebook_parameters(namespace)
    assert namespace["TRAIN_DIR"] == repo / "output" / "split" / "repo-train"
    assert namespace["VAL_DIR"] == repo / "output" / "split" / "repo-validation"
    assert namespace["SAMPLE"] == 4 and namespace["OTHER"] == "untouched"
    assert namespace["OUTPUT_DIR"] == repo / "SVM" / "output" and namespace["MESH_CACHE"] == repo / "SVM" / "elsewhere"
    assert "PHOTOS_DIR" not in namespace
    text = paths.summary()
    assert text.splitlines()[0].startswith("data: face_* folders at the repository root")
    assert "split CSV: " + str(repo / "output" / "split" / "repo-split.csv") in text
    assert [line.split(" = ")[0].strip() for line in text.splitlines()[3:]] == ["TRAIN_DIR", "VAL_DIR", "SAMPLE",
                                                                                 "OUTPUT_DIR", "MESH_CACHE"]


@pytest.mark.skipif(shutil.which("papermill") is None and not (Path(sys.executable).parent / "papermill").exists(),
                    reason="papermill is not installed")
def test_papermill_parameters_override_the_defaults(tmp_path: Path) -> None:
    """A notebook in the repository's style run by papermill with -p: the values given win."""
    import nbformat

    repo = _fill(_fake_repo(tmp_path / "repo"), 12)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("TRAIN_DIR = None\nVAL_DIR = None\nSAMPLE = None\nOUTPUT_DIR = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("from meshfer.datapaths import notebook_parameters\n\n"
                                                  "notebook_parameters(globals())"),
                nbformat.v4.new_code_cell("print(repr((str(TRAIN_DIR), str(VAL_DIR), SAMPLE, str(OUTPUT_DIR))))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = repo / "SVM" / "probe.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    papermill = shutil.which("papermill") or str(Path(sys.executable).parent / "papermill")
    env = {k: v for k, v in os.environ.items() if k not in DATA_VARS}
    run = subprocess.run([papermill, str(src), str(out), "--cwd", str(src.parent), "-p", "SAMPLE", "2",
                          "-p", "TRAIN_DIR", str(repo), "-p", "OUTPUT_DIR", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    done = nbformat.read(out, as_version=4)
    shown = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in done.cells[-2].outputs)
    assert "TRAIN_DIR  = " + str(repo / "output" / "split" / "repo-train") in shown
    printed = done.cells[-1].outputs[0]["text"]
    assert printed.strip() == repr((str(repo / "output" / "split" / "repo-train"),
                                    str(repo / "output" / "split" / "repo-validation"), 2, str(tmp_path / "o")))


# ------------------------------------------------------------------------------------------------
# The commands on a single data root


def meshfer(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**{k: v for k, v in os.environ.items() if k not in DATA_VARS}, "MESHFER_LANDMARKER": str(LANDMARKER),
            **(env or {})}
    return subprocess.run([sys.executable, "-m", "meshfer", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=full, cwd=cwd)


def test_evaluate_extract_and_train_on_one_root(tmp_path: Path) -> None:
    from meshfer.datapaths import fixed_split

    root = _fill(tmp_path / "data", 11, FER_VAL)
    split = fixed_split(root)
    n_val, n_train = len(split.side("validation")), len(split.side("train"))
    assert n_val == 7
    ev = meshfer("evaluate", root, "--split", "validation", "--json", "--no-progress", "--workers", "1")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["n_images"] == n_val and metrics["split"] == "validation"
    ex = meshfer("extract", root, "--split", "train", "-o", tmp_path / "train.npz", "--json", "--no-progress",
                 "--workers", "1")
    assert ex.returncode == 0, ex.stderr
    assert json.loads(ex.stdout)["n_images"] == n_train
    # meshfer train without --val: the fixed split, laid out in $MESHFER_SPLIT_DIR.
    views = tmp_path / "views"
    tr = meshfer("train", "logreg", root, "-o", tmp_path / "models", "--cache-dir", tmp_path / "cache",
                 "--workers", "1", "--json", env={"MESHFER_SPLIT_DIR": str(views)})
    assert tr.returncode == 0, tr.stderr
    assert f"no --val: training on the training side of the fixed split of {root} ({n_train} images)" in tr.stderr
    card = json.loads(tr.stdout)
    assert card["metrics"]["n_images"] == n_val and card["training_data"]["train_images"] == n_train
    assert card["training_data"]["left_out_copies_of_validation_images"] == 0
    assert _rows(views / "data-split.csv") == [
        {"path": r.path, "label": r.label, "group": r.group, "split": r.split} for r in split.rows
    ]
    help_text = meshfer("evaluate", "--help").stdout
    assert "--split" in help_text and "fixed split" in help_text


def test_sort_defaults_to_the_label_folders_of_the_repository(tmp_path: Path) -> None:
    repo = _fill(_fake_repo(tmp_path / "repo"), 2, FER_VAL, labels=["happy", "surprised"])
    run = meshfer("sort", "mouth", "..", "--quiet", "--json", "--workers", "1", cwd=repo / "SVM")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["dest"] == str(repo / "Mouth Closeness")
    sorted_files = list((repo / "Mouth Closeness").glob("mouth_*/*.jpg")) + list((repo / "Mouth Closeness").glob("unsure/*"))
    assert len(sorted_files) == 4
    outside = meshfer("sort", "eyes", repo, cwd=tmp_path)
    assert outside.returncode == 2 and "DEST_DIR is required outside the meshfer repository" in outside.stderr


def test_augment_script_with_its_globals_works_in_the_original_layout(tmp_path: Path) -> None:
    repo = _fill(tmp_path / "repo", 3, FER_VAL, labels=["surprised"])  # no fake package here: the script imports meshfer
    shutil.copy2(REPO / "augment.py", repo / "augment.py")
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, str(repo / "augment.py"), "--no-progress"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    folder = repo / "face_surprised"
    assert len(list(folder.glob("augmented_*"))) == 3
    assert run.stdout.strip() == (f"augment.py: {folder} (copies: one per source image, seed 0): "
                                  "3 augmented copies written from 3 source images (0 unreadable skipped)")
    shutil.rmtree(folder)
    missing = subprocess.run([sys.executable, str(repo / "augment.py"), "--no-progress"], cwd=elsewhere,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"augment.py: error: {folder}: no such folder (FOLDER = 'face_surprised' is relative to {repo}")
