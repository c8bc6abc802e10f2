"""Shared fixtures: executing a lesson notebook headless (papermill, smoke profile)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="session")
def notebook_outputs(tmp_path_factory) -> Path:
    """One OUTPUT_DIR for the whole session, so later notebooks reuse earlier checkpoints.

    It holds about 3.6 GB of checkpoints by the end of the lessons, and nbval's run of the notebooks
    (the next part of the session) fills as much again: `pytest_runtest_teardown` deletes it after the
    last test that uses it, so the two never lie on the disk together.
    """
    return tmp_path_factory.mktemp("notebook-outputs")


@pytest.fixture(scope="module")
def module_folder(tmp_path_factory, request) -> Iterator[Path]:
    """A scratch folder shared by one test module's tests, deleted when they are done: its runs hold
    checkpoints of 50-160 MB, which a `tmp_path_factory` folder would keep until the session ends."""
    folder = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


_LAST_USERS = pytest.StashKey[set]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember the last test of the run (after selection) that reads the lessons' shared folder."""
    users = [item.nodeid for item in session.items if "notebook_outputs" in getattr(item, "fixturenames", ())]
    session.config.stash[_LAST_USERS] = set(users[-1:])


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last user of `notebook_outputs`, delete the folder's contents (checkpoints, figures)."""
    if item.nodeid in item.config.stash.get(_LAST_USERS, set()) and "notebook_outputs" in item.funcargs:
        folder = Path(item.funcargs["notebook_outputs"])
        for child in folder.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()


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
