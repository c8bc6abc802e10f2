"""Keeping the committed notebooks clean: execute them in the smoke profile, keep only checked outputs.

The committed notebooks store the outputs of deterministic cells only (those whose first line is
`# NBVAL_CHECK_OUTPUT`: shapes, parameter counts, dataset statistics), so that nbval can compare them
on every change (`pytest --nbval-lax`), and nothing else: no images, no training logs.
`densemtl-lab notebooks refresh` re-executes the notebooks with DENSEMTL_PROFILE=smoke and writes
them back stripped; `check_committed` is what the test suite enforces.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

import nbformat

from densemtl_lab.atomic import write_text_atomic

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
_KEPT_MIME = ("text/plain",)


def is_checked(cell: nbformat.NotebookNode) -> bool:
    """Whether nbval compares this cell's stored output (`# NBVAL_CHECK_OUTPUT` on its first line)."""
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARKER)


def _text_only(output: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    if output.output_type == "stream":
        return output if output.name == "stdout" else None
    if output.output_type in ("execute_result", "display_data"):
        data = {key: value for key, value in output.data.items() if key in _KEPT_MIME}
        if not data:
            return None
        output.data = data
        output.metadata = {}
        return output
    return None


def strip_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Keep the text outputs of checked cells; clear every other output and execution count."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if is_checked(cell):
            cell.outputs = [kept for kept in map(_text_only, cell.outputs) if kept is not None]
        else:
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("widgets", None)
    notebook.metadata.pop("papermill", None)
    return notebook


def committed_problems(notebook: nbformat.NotebookNode, name: str) -> list[str]:
    """What a committed notebook stores that it should not (empty when clean)."""
    problems = []
    if not any("parameters" in cell.metadata.get("tags", []) for cell in notebook.cells):
        problems.append(f"{name}: no cell is tagged 'parameters'")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.get("outputs"):
            continue
        if not is_checked(cell):
            problems.append(f"{name} cell {index}: stores outputs but is not a {CHECK_MARKER} cell")
        for output in cell.outputs:
            kinds = set(output.get("data", {})) - set(_KEPT_MIME)
            if kinds or output.output_type == "error" or output.get("name") == "stderr":
                problems.append(f"{name} cell {index}: stores a {output.output_type} output "
                                f"({', '.join(sorted(kinds)) or output.get('name', '')})")
    return problems


def refresh(paths: Iterable[Path], timeout: int = 600) -> None:
    """Execute each notebook in the smoke profile (in its own folder) and write it back stripped."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as scratch:
        environment = {"DENSEMTL_PROFILE": "smoke", "DENSEMTL_OUTPUT_DIR": scratch,
                       "DENSEMTL_WIDGETS": "0", "MPLBACKEND": "Agg"}
        saved = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)
        try:
            for path in paths:
                notebook = nbformat.read(path, as_version=4)
                NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                               resources={"metadata": {"path": str(path.parent)}}).execute()
                text = nbformat.writes(strip_notebook(notebook))
                write_text_atomic(path, text if text.endswith("\n") else text + "\n")
                print(f"refreshed {path}")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
