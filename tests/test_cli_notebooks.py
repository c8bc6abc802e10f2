"""Tests of `densemtl-lab notebooks refresh|check` (densemtl_lab.cli over densemtl_lab.nbtools)."""

from __future__ import annotations

import nbformat
import pytest

from densemtl_lab import cli


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
    assert cli.main(["notebooks", "check", str(tmp_path / "00_a.ipynb")]) == 0
    assert capsys.readouterr().out.strip() == "1 notebooks clean"


@pytest.mark.parametrize("options, problem", [
    ({"tagged": False}, "no cell is tagged 'parameters'"),
    ({"stored_output": True}, "stores outputs but is not a # NBVAL_CHECK_OUTPUT cell"),
])
def test_check_lists_problems_and_fails(tmp_path, capsys, options, problem):
    write_notebook(tmp_path / "01_b.ipynb", **options)
    assert cli.main(["notebooks", "check", str(tmp_path / "01_b.ipynb")]) == cli.EXIT_NOTEBOOK_PROBLEMS
    assert problem in capsys.readouterr().out


def test_default_paths_are_the_notebooks_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no notebooks/"):
        cli.notebook_paths([])
    (tmp_path / "notebooks").mkdir()
    for name in ("01_b.ipynb", "00_a.ipynb"):
        write_notebook(tmp_path / "notebooks" / name)
    assert [p.name for p in cli.notebook_paths([])] == ["00_a.ipynb", "01_b.ipynb"]


def test_missing_notebook_is_a_user_error(tmp_path, capsys):
    assert cli.main(["notebooks", "check", str(tmp_path / "nope.ipynb")]) == cli.EXIT_USER_ERROR
    assert "nope.ipynb does not exist" in capsys.readouterr().err


def test_refresh_executes_and_keeps_only_checked_outputs(tmp_path):
    path = tmp_path / "02_c.ipynb"
    write_notebook(path, stored_output=True)
    assert cli.main(["notebooks", "refresh", str(path)]) == 0
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
    assert cli.main(["notebooks", "refresh", str(path)]) == cli.EXIT_INTERRUPTED
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["03_d.ipynb"]


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt
