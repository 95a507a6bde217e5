"""The front door and the documentation: the README's commands work on the shipped samples, its
links lead somewhere, and docs/ builds with MkDocs in strict mode (no broken link or anchor)."""

from __future__ import annotations

import html.parser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

README = REPO / "README.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node] if node.endswith(".md") else []
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_the_readme_is_a_short_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    commands = [line.split("#")[0].strip() for block in _blocks(text, "bash") for line in block.splitlines()]
    # install, test, and the main job on what a fresh clone has
    assert commands[:3] == ["python -m pip install -r requirements.txt", "python -m pytest", "meshfer predict --samples"]


def test_every_page_in_the_navigation_exists_and_every_page_is_in_it() -> None:
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert pages and len(pages) == len(set(pages))
    docs = REPO / config.get("docs_dir", "docs")
    for page in pages:
        assert (docs / page).is_file(), page
    assert sorted(p.name for p in docs.glob("*.md")) == sorted(pages)


class _Ids(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)


def test_docs_build_in_strict_mode_and_the_readme_links_resolve(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (site / "index.html").is_file()
    # every relative link of the README leads to a file; a docs page's anchor exists in the built page
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        path, _, anchor = link.partition("#")
        assert (REPO / path).exists(), link
        if anchor and path.startswith("docs/") and path.endswith(".md"):
            page = Path(path).relative_to("docs").with_suffix("")
            built = site / ("index.html" if page.name == "index" else page / "index.html")
            parser = _Ids()
            parser.feed(built.read_text())
            assert anchor in parser.ids, link


def test_the_readme_commands_run_on_the_shipped_samples(tmp_path: Path) -> None:
    from meshfer.samples import sample_images

    text = README.read_text()
    samples = sample_images()
    assert [p.parent.name for p in samples] == ["face_angry", "face_disgusted", "face_happy", "face_neutral",
                                                "face_sad", "face_surprised"]
    assert (samples[0].parents[1] / "README.md").read_text().count("Apache") >= 1
    proc = subprocess.run([sys.executable, "-m", "meshfer", "predict", "--samples"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:]}
    assert sorted(got) == sorted(f"{p.parent.name}/{p.name}" for p in samples)
    # the output the README shows is what the shipped models print (labels; probabilities move with the machine)
    shown = next(block for block in _blocks(text, "text") if block.startswith("image "))
    assert {line.split()[0]: line.split()[1] for line in shown.splitlines()[1:]} == got
    # the README's Python example, on a sample photo
    code = next(block for block in _blocks(text, "python"))
    proc = subprocess.run([sys.executable, "-c", code.replace('"photo.jpg"', repr(str(samples[2])))],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'label': 'happy'" in proc.stdout


def test_predict_without_inputs_says_what_to_give() -> None:
    proc = subprocess.run([sys.executable, "-m", "meshfer", "predict"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "meshfer: error: give images or folders (IMAGE_OR_DIR), or --samples for the shipped sample photos"]


@pytest.mark.parametrize("script", sorted((REPO / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_each_script_says_what_it_measures_first(script: Path) -> None:
    import ast

    doc = ast.get_docstring(ast.parse(script.read_text()))
    assert doc, f"{script.name}: start with a docstring saying what it measures"
    head = "\n".join(doc.splitlines()[:6])
    assert re.search(r"^Feeds: \S", head, flags=re.M), f"{script.name}: say in its first lines which doc it feeds"
    for path in re.findall(r"docs/[\w/.-]+\.(?:md|jpg|png)", head):
        assert (REPO / path).exists(), f"{script.name}: {path} does not exist"
