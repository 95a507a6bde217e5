"""Every notebook of the repository runs top to bottom on a few images per class.

Notebooks read their parameters from environment variables (see README, "Notebooks"): data folders,
a per-class sample limit, and an output folder; here they point at ../shared and a temporary folder.
Set MESHFER_NOTEBOOK_SAMPLE to change the sample size.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import FER_TRAIN, FER_VAL, LANDMARKER, PHOTOS, PHOTOS_TRAIN, REPO

NOTEBOOKS = sorted(
    p for p in REPO.rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts and ".venv" not in p.parts and "output" not in p.parts
)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    env = {
        "MESHFER_TRAIN_DIR": str(FER_TRAIN),
        "MESHFER_VAL_DIR": str(FER_VAL),
        "MESHFER_PHOTOS_DIR": str(PHOTOS),
        "MESHFER_PHOTOS_TRAIN_DIR": str(PHOTOS_TRAIN),
        "MESHFER_SAMPLE": os.environ.get("MESHFER_NOTEBOOK_SAMPLE", "4"),
        "MESHFER_OUTPUT_DIR": str(tmp_path / "output"),
        "MESHFER_MESH_CACHE": str(tmp_path / "meshes"),
        "MESHFER_LANDMARKER": str(LANDMARKER),
        "MPLBACKEND": "Agg",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [
        out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []) if out.output_type == "error"
    ]
    assert not errors


@pytest.mark.slow
def test_svm_notebook_runs_its_full_searches_on_ten_images_per_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small data set of the user's own, no sample limit: the full grids ask for 100 PCA components
    where 10 images per class allow fewer; the widths are lowered and the notebook says so."""
    import shutil

    import nbformat
    from nbclient import NotebookClient

    from conftest import sample_images

    folders = {}
    for name, root in (("train", FER_TRAIN), ("val", FER_VAL)):
        for label, files in sample_images(root, 10).items():
            (tmp_path / name / f"face_{label}").mkdir(parents=True)
            for f in files:
                shutil.copy2(f, tmp_path / name / f"face_{label}" / f.name)
        folders[name] = tmp_path / name
    env = {"MESHFER_TRAIN_DIR": str(folders["train"]), "MESHFER_VAL_DIR": str(folders["val"]),
           "MESHFER_PHOTOS_DIR": str(PHOTOS), "MESHFER_OUTPUT_DIR": str(tmp_path / "output"),
           "MESHFER_MESH_CACHE": str(tmp_path / "meshes"), "MESHFER_LANDMARKER": str(LANDMARKER), "MPLBACKEND": "Agg"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MESHFER_SAMPLE", raising=False)
    path = REPO / "SVM" / "model.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "PCA width 100 lowered to" in text
