"""Notebook 00 (welcome and set-up check) runs headless and records its numbers."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebooks


def test_notebook_00_checks_the_setup_and_counts_parameters(execute_notebook, notebook_outputs) -> None:
    metrics, _ = execute_notebook("00_welcome")
    assert metrics["profile"] == "smoke"
    assert metrics["setup"]["threads"] >= 1 and metrics["setup"]["cuda"] in (0.0, 1.0)
    assert metrics["dataset"]["val_scenes"] == 4  # the smoke profile's val_length
    sizes = metrics["parameters_m"]
    assert 0 < sizes["mtl"] < sizes["stl_total"]  # one shared encoder instead of four
    assert sizes["mtl"] > sizes["stl_total"] / 4
    assert (notebook_outputs / "00_welcome" / "figures" / "four_tasks.png").is_file()
