"""Notebook 02 (one network per task) trains four single-task networks and stores their baselines."""

from __future__ import annotations

import json
import math

import pytest

from densemtl_lab.tasks import TASK_ORDER, TASKS

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

RANGES = {"semseg": (0.0, 100.0), "depth": (0.0, 81.0), "normals": (0.0, 180.0), "edges": (0.0, 100.0)}


def test_notebook_02_trains_every_task_and_stores_baselines(execute_notebook, notebook_outputs) -> None:
    metrics, _ = execute_notebook("02_single_task")
    assert metrics["profile"] == "smoke"
    assert set(metrics["stl"]) == set(TASK_ORDER) == set(metrics["baselines"])
    for task, (low, high) in RANGES.items():
        main = metrics["stl"][task][TASKS[task].main_metric]
        assert math.isfinite(main) and low <= main <= high
        assert metrics["baselines"][task] == main
    stored = json.loads((notebook_outputs / "baselines.json").read_text())
    assert "toy-smoke-s0" in json.dumps(stored)
    runs = {path.name for path in (notebook_outputs / "runs").iterdir()}
    assert {f"smoke-stl-{TASKS[t].letter}-s0" for t in TASK_ORDER} <= runs
