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
