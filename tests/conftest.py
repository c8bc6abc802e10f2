"""Shared fixtures: executing a lesson notebook headless (papermill, smoke profile)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="session")
def notebook_outputs(tmp_path_factory) -> Path:
    """One OUTPUT_DIR for the whole session, so later notebooks reuse earlier checkpoints."""
    return tmp_path_factory.mktemp("notebook-outputs")


@pytest.fixture(scope="session")
def execute_notebook(notebook_outputs, tmp_path_factory):
    """Run `notebooks/<stem>.ipynb` in the smoke profile; return (metrics.json dict, executed notebook)."""
    import nbformat
    import papermill

    executed_dir = tmp_path_factory.mktemp("executed")

    def run(stem: str, **parameters) -> tuple[dict, nbformat.NotebookNode]:
        source = NOTEBOOKS / f"{stem}.ipynb"
        target = executed_dir / source.name
        values = {"PROFILE": "smoke", "DEVICE": "cpu", "SEED": 0, "DATA_ROOT": "",
                  "OUTPUT_DIR": str(notebook_outputs), **parameters}
        papermill.execute_notebook(str(source), str(target), parameters=values, kernel_name="python3",
                                   cwd=str(NOTEBOOKS), progress_bar=False, execution_timeout=300)
        metrics_path = notebook_outputs / stem / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        return metrics, nbformat.read(target, as_version=4)

    return run
