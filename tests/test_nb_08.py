"""Notebook 08 (gradient conflicts) runs headless: the toy conflict, the measured cosines, a real Jacobian."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

PAIRS = {"grad_cosine/semseg~depth", "grad_cosine/semseg~normals", "grad_cosine/depth~normals"}


def test_notebook_08_measures_the_conflicts_and_draws_what_aggregators_do(execute_notebook, notebook_outputs) -> None:
    metrics, executed = execute_notebook("08_gradient_conflicts")
    assert metrics["profile"] == "smoke"
    toy = metrics["toy_alignment"]  # what the lesson's prose says of the toy pair
    assert toy["Mean"]["a"] < 0 < toy["Mean"]["b"]
    assert all(min(toy[name]["a"], toy[name]["b"]) >= -1e-6 for name in ("MGDA", "PCGrad", "UPGrad"))
    assert metrics["jacobian_shape"][0] == 3 and metrics["jacobian_shape"][1] > 10_000
    for name in ("MGDA", "UPGrad"):  # never against a task's gradient on the batch they see
        assert min(metrics["alignment"][name][task] for task in ("semseg", "depth", "normals")) >= -1e-4
    assert set(metrics["mean_cosines"]) == PAIRS
    assert all(-1.0 <= value <= 1.0 for value in metrics["mean_cosines"].values())
    rows = metrics["results_table"]
    assert [row["model"] for row in rows] == ["DenseMTL (weighted sum)", "DenseMTL + upgrad"]
    assert all(row["delta_m"] is None or math.isfinite(row["delta_m"]) for row in rows)
    costs = metrics["step_costs"]  # measured on this machine: the weighted sum is the unit
    assert list(costs) == ["none", "mgda", "pcgrad", "upgrad"]
    assert costs["none"]["relative"] == 1.0
    for cost in costs.values():
        assert cost["wall_s"] > 0 and cost["cpu_s"] > 0
        assert math.isclose(cost["relative"], cost["wall_s"] / costs["none"]["wall_s"])
    figures = {path.name for path in (notebook_outputs / "08_gradient_conflicts" / "figures").iterdir()}
    assert {"toy_directions.png", "cosines_over_training.png", "pair_directions.png", "all_directions.png",
            "comparison.png", "cosines_with_aggregator.png", "step_costs.png", "study_table.png",
            "study_paired_differences.png"} <= figures
    # the shipped study's section prints its findings from the file: each aggregator against the weighted sum
    from densemtl_lab.study import load_shipped
    from densemtl_lab.viz.studies import study_findings

    (findings,) = [cell for cell in executed.cells if cell.get("id") == "cell-agg-study-4"]
    printed = "".join(output.get("text", "") for output in findings.outputs)
    assert printed.strip() == study_findings(load_shipped("aggregators", "course")).strip()
    for model in ("densemtl", "mtl"):
        for method in ("mgda", "pcgrad", "upgrad"):
            assert f"{model}-{method} - {model}" in printed
