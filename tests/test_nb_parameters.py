"""A bad notebook parameter stops every lesson at its session cell, with a one-line message."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

pytestmark = [pytest.mark.notebooks]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
LESSONS = sorted(path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
MISSING_ROOT = "/nonexistent/densemtl-data"


def _execute_with(stem: str, tmp_path: Path, **parameters) -> tuple[papermill.PapermillExecutionError,
                                                                    nbformat.NotebookNode]:
    target = tmp_path / f"{stem}.ipynb"
    values = {"PROFILE": "smoke", "DEVICE": "cpu", "SEED": 0, "DATA_ROOT": "",
              "OUTPUT_DIR": str(tmp_path / "outputs"), **parameters}
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(NOTEBOOKS / f"{stem}.ipynb"), str(target), parameters=values,
                                   kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False,
                                   execution_timeout=120)
    return failure.value, nbformat.read(target, as_version=4)


def _assert_stopped_at_session_cell(notebook: nbformat.NotebookNode) -> None:
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    session = next(index for index, cell in enumerate(code) if "notebook.start(" in cell.source)
    errors = [index for index, cell in enumerate(code)
              if any(output.get("output_type") == "error" for output in cell.get("outputs", []))]
    assert errors == [session]
    assert all(cell.get("execution_count") is None for cell in code[session + 1:])
    (error,) = [output for output in code[session].outputs if output.output_type == "error"]
    assert len(error.traceback) == 1 and error.traceback[0].startswith("NotebookError: ")


@pytest.mark.parametrize("stem", LESSONS)
def test_an_unknown_profile_stops_the_lesson_at_its_session_cell(stem: str, tmp_path: Path) -> None:
    failure, executed = _execute_with(stem, tmp_path, PROFILE="nope")
    assert failure.ename == "NotebookError" and "PROFILE" in failure.evalue and "nope" in failure.evalue
    _assert_stopped_at_session_cell(executed)


def test_a_missing_data_root_stops_the_data_lesson_naming_the_folder(tmp_path: Path) -> None:
    failure, executed = _execute_with("01_data", tmp_path, DATA_ROOT=MISSING_ROOT)
    assert failure.ename == "NotebookError" and f"DATA_ROOT={MISSING_ROOT!r} is not a folder" in failure.evalue
    _assert_stopped_at_session_cell(executed)
