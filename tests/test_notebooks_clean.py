"""Notebooks are stored stripped (no outputs, counts, widget state or timings) and open with a title.

Outputs in git make every diff noisy, can hold a machine's paths or data, and would let nbval
compare against stale results. Fix a failing check with ``make strip``, which runs this module:

    python tests/test_notebooks_clean.py notebooks/*.ipynb
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What keeps a notebook from being stored stripped, one line per problem (empty when clean).

    Example
    -------
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", execution_count=3)])
    >>> problems(nb)
    ['code cell 1: execution_count is 3, not null']
    """
    found = []
    if "widgets" in nb.metadata:
        found.append("metadata.widgets holds saved widget state")
    for i, cell in enumerate(nb.cells, start=1):
        if cell.cell_type == "code":
            if cell.get("outputs"):
                found.append(f"code cell {i}: {len(cell.outputs)} output(s)")
            if cell.get("execution_count") is not None:
                found.append(f"code cell {i}: execution_count is {cell.execution_count}, not null")
        # JupyterLab's "record timing" writes run timestamps into cells: noise in every diff.
        if "execution" in cell.get("metadata", {}):
            found.append(f"{cell.cell_type} cell {i}: metadata.execution holds run timings")
    return found


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without outputs, execution counts, widget state or run timings (changed in place).

    Example
    -------
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", execution_count=3)])
    >>> problems(strip(nb))
    []
    """
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.get("metadata", {}).pop("execution", None)
    return nb


def title(nb: nbformat.NotebookNode) -> str | None:
    """The notebook's title: the level-1 Markdown heading its first cell opens with, else None.

    Example
    -------
    >>> title(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Tuning weights\\nText")]))
    'Tuning weights'
    """
    if not nb.cells or nb.cells[0].cell_type != "markdown":
        return None
    first = next((line.strip() for line in nb.cells[0].source.splitlines() if line.strip()), "")
    match = re.fullmatch(r"#\s+(\S.*)", first)
    return match.group(1).strip() if match else None


def _read(path: Path) -> nbformat.NotebookNode:
    # NO_CONVERT: check the file as stored, not an upgraded copy of it.
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_is_valid_nbformat_4(path: Path) -> None:
    nb = _read(path)
    assert nb.nbformat == 4, f"{path.name}: nbformat {nb.nbformat}, expected 4"
    try:
        nbformat.validate(nb)
        error = None
    except nbformat.ValidationError as e:
        error = e.message
    assert error is None, f"{path.name}: not valid nbformat 4: {error}"


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_is_stored_stripped(path: Path) -> None:
    found = problems(_read(path))
    assert not found, f"{path.name} is not stripped (run `make strip`):\n  " + "\n  ".join(found)


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_opens_with_a_markdown_title(path: Path) -> None:
    nb = _read(path)
    first = nb.cells[0].cell_type if nb.cells else "nothing"
    assert title(nb), f"{path.name}: the first cell must be Markdown opening with '# Title' (it is {first})"


def test_the_checks_catch_what_strip_removes() -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("Intro without a heading"),
            nbformat.v4.new_code_cell(
                "print(1)",
                execution_count=1,
                outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")],
                metadata={"execution": {"iopub.status.busy": "2025-01-01T00:00:00Z"}},
            ),
        ],
        metadata={"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2, "version_minor": 0}}},
    )
    assert problems(nb) == [
        "metadata.widgets holds saved widget state",
        "code cell 2: 1 output(s)",
        "code cell 2: execution_count is 1, not null",
        "code cell 2: metadata.execution holds run timings",
    ]
    assert title(nb) is None
    stripped = strip(nb)
    assert problems(stripped) == []
    assert stripped.cells[1].source == "print(1)"  # the code itself stays
    nbformat.validate(stripped)
    assert title(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("\n#  Explore  \n")])) == "Explore"
    assert title(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("## Only a subtitle")])) is None
    assert title(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# a comment")])) is None


def main(paths: list[str]) -> int:
    """Strip the notebooks at ``paths`` in place, rewriting only those that change; the exit status."""
    if not paths:
        print("usage: python tests/test_notebooks_clean.py NOTEBOOK.ipynb ...", file=sys.stderr)
        return 2
    for name in paths:
        path = Path(name)
        nb = _read(path)
        if problems(nb):
            nbformat.write(strip(nb), path)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
