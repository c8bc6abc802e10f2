"""The papermill batch runner and its report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nbformat
import pytest

from densemtl_lab import run


def _notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("OUTPUT_DIR = None\nPROFILE = 'smoke'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_discover_and_select_keep_lesson_order(tmp_path):
    for name in ("02_b.ipynb", "00_a.ipynb", "notes.ipynb", "10_c.ipynb"):
        (tmp_path / name).write_text("{}")
    found = run.discover_notebooks(tmp_path)
    assert [p.name for p in found] == ["00_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.name for p in run.select_notebooks(found, "10,2")] == ["02_b.ipynb", "10_c.ipynb"]
    with pytest.raises(run.RunnerError, match="no notebook numbered 05"):
        run.select_notebooks(found, "05")


def test_parse_parameters_reads_json_literals_and_rejects_bad_names():
    assert run.parse_parameters(["SEED=3", "NAME=abc", "FLAG=true", "SIZE=[64, 128]"]) == {
        "SEED": 3, "NAME": "abc", "FLAG": True, "SIZE": [64, 128]}
    with pytest.raises(run.RunnerError, match="NAME=VALUE"):
        run.parse_parameters(["no-equals"])


def test_new_run_folder_never_reuses_a_folder(tmp_path):
    first = run.new_run_folder(tmp_path, "suite")
    second = run.new_run_folder(tmp_path, "suite")
    assert first != second and first.is_dir() and second.is_dir()


def test_missing_notebook_folder_is_a_clear_error(tmp_path):
    with pytest.raises(run.RunnerError, match="does not exist"):
        run.discover_notebooks(tmp_path / "nope")


@pytest.mark.notebooks
def test_suite_goes_on_past_a_failure_and_reports_it(tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    write_metrics = (
        "import json, pathlib\n"
        "out = pathlib.Path(OUTPUT_DIR) / '00_good'\n"
        "(out / 'figures').mkdir(parents=True)\n"
        "(out / 'metrics.json').write_text(json.dumps({'answer': 42, 'results_table': "
        "[{'model': 'mtl', 'tasks': 'SD', 'delta_m': 1.5}]}))\n"
    )
    _notebook(folder / "00_good.ipynb", write_metrics)
    _notebook(folder / "01_bad.ipynb", "raise RuntimeError('lesson broke')")
    _notebook(folder / "02_after.ipynb", "x = 1")
    args = argparse.Namespace(profile="smoke", only=None, parameter=[], notebooks=folder,
                              runs=tmp_path / "runs", data_root=None, seed=0, device="cpu",
                              cell_timeout=120)
    status = run.run_from_args(args)
    assert status == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    statuses = {nb["name"]: nb["status"] for nb in summary["notebooks"]}
    assert statuses == {"00_good": "ok", "01_bad": "failed", "02_after": "ok"}
    bad = next(nb for nb in summary["notebooks"] if nb["name"] == "01_bad")
    assert "lesson broke" in bad["error"]
    assert summary["notebooks"][0]["metrics"]["answer"] == 42
    report = (run_dir / "report.html").read_text()
    assert "<td>1.5</td>" in report and "delta_m is the mean relative change" in report
    assert (run_dir / "notebooks" / "02_after.ipynb").is_file()
