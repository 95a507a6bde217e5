"""The original quick start as a new user follows it: a fresh copy of the repository with the data set's
face_* folders extracted at its root (here a few FER-2013 images per class, linked from ../shared), no
MESHFER_* data variables, and every notebook run top to bottom from its own folder, in order, sharing
the mesh cache and the fixed split like a user's runs do.

MESHFER_SAMPLE (not a data variable) keeps the heavy searches and trainings at their token size, as in
test_notebooks.py; MESHFER_QUICKSTART_PER_CLASS sets the images per class at the root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FER_TRAIN, LANDMARKER, REPO, sample_images
from test_notebooks import NOTEBOOKS

PER_CLASS = int(os.environ.get("MESHFER_QUICKSTART_PER_CLASS", "20"))  # the fixed split sends 2 of them to validation


def _tracked_files(repo: Path) -> list[str]:
    """The files of the working tree that git tracks or would track (uncommitted changes included)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                             capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is needed to copy the repository's files")
    return [f for f in out.decode("utf-8", "surrogateescape").split("\0") if f]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clone = tmp_path_factory.mktemp("quickstart") / "meshfer"
    for rel in _tracked_files(REPO):
        src = REPO / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    # README, quick start: the data set's folders extracted at the repository root.
    for label, files in sample_images(FER_TRAIN, PER_CLASS).items():
        folder = clone / f"face_{label}"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f)
    return clone


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[str(p.relative_to(REPO)) for p in NOTEBOOKS])
def test_notebook_runs_in_a_fresh_clone(path: Path, fresh_clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    for name in [k for k in os.environ if k.startswith("MESHFER_")]:
        if name not in ("MESHFER_LANDMARKER", "MESHFER_LANDMARKER_URL", "MESHFER_CACHE_DIR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MESHFER_SAMPLE", os.environ.get("MESHFER_NOTEBOOK_SAMPLE", "4"))
    monkeypatch.setenv("MESHFER_LANDMARKER", str(LANDMARKER))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = fresh_clone / path.relative_to(REPO)
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}})
    client.execute()
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.output_type == "error"]
    assert not errors
    # The data came from the face_* folders at the root, through the fixed split written beside the outputs.
    shown = "".join(out.get("data", {}).get("text/plain", "") + out.get("text", "")
                    for cell in nb.cells if "notebook_parameters(globals())" in cell.source for out in cell.outputs)
    assert f"data: face_* folders at the repository root {fresh_clone}" in shown
    assert (fresh_clone / "output" / "split" / "meshfer-split.csv").is_file()
    assert not (fresh_clone / "data").exists()
