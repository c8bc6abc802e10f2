"""Tests of the maintainers' `python tests/nbtools.py refresh|check` (tests/nbtools.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import nbtools
import pytest


def write_notebook(path, *, tagged: bool = True, stored_output: bool = False) -> None:
    """A two-cell notebook: a (tagged) parameters cell and a checked cell."""
    parameters = nbformat.v4.new_code_cell("VALUE = 3")
    if tagged:
        parameters.metadata["tags"] = ["parameters"]
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(VALUE * 2)")
    unchecked = nbformat.v4.new_code_cell("print('not kept')")
    if stored_output:
        unchecked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="not kept\n")]
    notebook = nbformat.v4.new_notebook(cells=[parameters, checked, unchecked])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def test_check_passes_clean_notebooks(tmp_path, capsys):
    write_notebook(tmp_path / "00_a.ipynb")
    assert nbtools.main(["check", str(tmp_path / "00_a.ipynb")]) == 0
    assert capsys.readouterr().out.strip() == "1 notebooks clean"


@pytest.mark.parametrize("options, problem", [
    ({"tagged": False}, "no cell is tagged 'parameters'"),
    ({"stored_output": True}, "stores outputs but is not a # NBVAL_CHECK_OUTPUT cell"),
])
def test_check_lists_problems_and_fails(tmp_path, capsys, options, problem):
    write_notebook(tmp_path / "01_b.ipynb", **options)
    assert nbtools.main(["check", str(tmp_path / "01_b.ipynb")]) == nbtools.EXIT_PROBLEMS
    assert problem in capsys.readouterr().out


def test_runs_as_a_script_from_a_checkout(tmp_path):
    write_notebook(tmp_path / "01_b.ipynb", tagged=False)
    finished = subprocess.run([sys.executable, str(Path(nbtools.__file__)), "check", str(tmp_path / "01_b.ipynb")],
                              capture_output=True, text=True)
    assert finished.returncode == nbtools.EXIT_PROBLEMS, finished.stderr
    assert "no cell is tagged 'parameters'" in finished.stdout


def test_default_paths_are_the_notebooks_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no notebooks/"):
        nbtools.notebook_paths([])
    (tmp_path / "notebooks").mkdir()
    for name in ("01_b.ipynb", "00_a.ipynb"):
        write_notebook(tmp_path / "notebooks" / name)
    assert [p.name for p in nbtools.notebook_paths([])] == ["00_a.ipynb", "01_b.ipynb"]


def test_missing_notebook_is_a_user_error(tmp_path, capsys):
    assert nbtools.main(["check", str(tmp_path / "nope.ipynb")]) == nbtools.EXIT_USER_ERROR
    assert "nope.ipynb does not exist" in capsys.readouterr().err


def test_refresh_executes_and_keeps_only_checked_outputs(tmp_path):
    path = tmp_path / "02_c.ipynb"
    write_notebook(path, stored_output=True)
    assert nbtools.main(["refresh", str(path)]) == 0
    cells = nbformat.read(path, as_version=4).cells
    assert [output["text"] for output in cells[1].outputs] == ["6\n"]
    assert cells[2].outputs == [] and cells[2].execution_count is None


def test_refresh_replaces_a_notebook_whole_or_not_at_all(tmp_path, monkeypatch):
    from densemtl_lab import atomic

    path = tmp_path / "03_d.ipynb"
    write_notebook(path, stored_output=True)
    before = path.read_bytes()
    monkeypatch.setattr("nbclient.NotebookClient.execute", lambda self: self.nb)
    monkeypatch.setattr(atomic.os, "replace", _interrupt)  # killed as the new notebook is put in place
    assert nbtools.main(["refresh", str(path)]) == nbtools.EXIT_INTERRUPTED
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["03_d.ipynb"]


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt
