"""The committed lesson notebooks are clean: parameters cell, only checked text outputs, the lesson shape."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import nbtools
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_the_lessons_are_there():
    stems = [path.stem for path in NOTEBOOKS]
    assert stems[:4] == ["00_welcome", "01_data", "02_single_task", "03_multitask_baseline"]
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+", stem) for stem in stems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_stores_only_checked_text(path):
    notebook = read(path)
    nbformat.validate(notebook)
    assert nbtools.committed_problems(notebook, path.name) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_follows_the_lesson_shape(path):
    notebook = read(path)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    cells = notebook.cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith(f"# {path.stem[:2]}")
    code = [cell for cell in cells if cell.cell_type == "code"]
    assert "parameters" in code[1].metadata.get("tags", [])  # imports first, then the parameters
    assert "notebook.start(" in code[2].source and "lab.describe()" in code[2].source
    assert sum(nbtools.is_checked(cell) for cell in code) >= 2
    assert "lab.write_metrics(" in "".join(cell.source for cell in code)
    assert cells[-1].cell_type == "markdown" and "Things to try" in cells[-1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_checked_cells_were_executed(path):
    """nbval compares only cells that ran when the notebook was refreshed (nbtools.refresh)."""
    unexecuted = [index for index, cell in enumerate(read(path).cells)
                  if nbtools.is_checked(cell) and cell.execution_count is None]
    assert unexecuted == [], f"run python tests/nbtools.py refresh {path.relative_to(path.parents[1])}"
