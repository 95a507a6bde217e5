"""Re-run part of a notebook and keep the outputs of the rest.

Feeds: no figures of its own; it refreshes the outputs of a notebook's chosen cells (docs/notebooks.md).

Some notebooks train networks for an hour on all images before their last sections; when only those
sections change (e.g. ``Hybrid/model.ipynb``'s shipped model and recipes), this runs the set-up
cells and the chosen cells in a fresh kernel, in order, and writes their new outputs into the
notebook, leaving every other cell's outputs as they were. The notebook's parameters come from the
``MESHFER_*`` environment variables, as for a whole run (README, "Notebooks").

    python scripts/run_notebook_cells.py Hybrid/model.ipynb --setup 1-4 --cells 11-
"""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_range(text: str, n: int) -> list[int]:
    """'1-4,7,11-' -> [1, 2, 3, 4, 7, 11, ..., n - 1]."""
    out: list[int] = []
    for part in filter(None, text.split(",")):
        a, sep, b = part.partition("-")
        start = int(a)
        stop = (int(b) if b else n - 1) if sep else start
        out.extend(range(start, stop + 1))
    return sorted(set(i for i in out if 0 <= i < n))


def main() -> None:
    import nbformat
    from nbclient import NotebookClient

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--setup", required=True, help="cells that prepare the data (run, outputs kept too), e.g. 1-4")
    ap.add_argument("--cells", required=True, help="cells to run after them, e.g. 11- (to the end)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = ap.parse_args()

    nb = nbformat.read(args.notebook, as_version=4)
    wanted = sorted(set(parse_range(args.setup, len(nb.cells)) + parse_range(args.cells, len(nb.cells))))
    part = nbformat.v4.new_notebook(metadata=nb.metadata)
    part.cells = [nbformat.from_dict(dict(nb.cells[i])) for i in wanted]
    client = NotebookClient(part, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent.resolve())}})
    client.execute()
    errors = [o for c in part.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    if errors:
        raise SystemExit(f"{args.notebook}: a cell failed: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    for i, cell in zip(wanted, part.cells):
        if cell.cell_type == "code":
            nb.cells[i].outputs = cell.outputs
            nb.cells[i].execution_count = cell.execution_count
    nbformat.write(nb, args.notebook)
    print(f"{args.notebook}: cells {wanted} run again, the other cells' outputs kept")


if __name__ == "__main__":
    main()
