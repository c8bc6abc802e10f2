"""Notebook 06 (multi-task domain adaptation on the toy pair) runs headless and writes its result table."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

RUNS = {"source-only", "adversarial", "entropy", "oracle"}


def test_notebook_06_compares_source_only_adaptation_and_oracle_on_the_target(execute_notebook) -> None:
    metrics, executed = execute_notebook("06_domain_adaptation")
    assert metrics["profile"] == "smoke" and metrics["severity"] == 0.5
    assert set(metrics["target"]) == RUNS
    for results in [*metrics["target"].values(), metrics["source_val"]["source-only"]]:
        assert set(results) == {"semseg", "depth"}
        assert 0.0 <= results["semseg"]["mIoU"] <= 100.0 and 0.0 <= results["semseg"]["pixel_acc"] <= 100.0
        assert 0.0 < results["depth"]["rmse"] < 81.0 and math.isfinite(results["depth"]["abs_rel"])
        assert 0.0 <= results["depth"]["delta1"] <= 100.0
    assert list(metrics["gap_by_severity"]) == ["0", "0.25", "0.5", "0.75", "1"]
    assert all(0.0 <= value <= 100.0 for value in metrics["gap_by_severity"].values())
    # the smoke profile trains 4 steps: no learning is asserted, only that no cell failed
    assert not any(output.get("output_type") == "error" for cell in executed.cells
                   for output in cell.get("outputs", []))
    # the shipped study's section prints its findings from the file: each method against source-only and the control
    from densemtl_lab.study import load_shipped
    from densemtl_lab.viz.studies import study_findings

    (findings,) = [cell for cell in executed.cells if cell.get("id") == "cell-adapt-study-4"]
    printed = "".join(output.get("text", "") for output in findings.outputs)
    expected = study_findings(load_shipped("adaptation", "course"), metrics=("semseg/mIoU", "depth/rmse"))
    assert printed.strip() == expected.strip()
    for a, b in (("adversarial", "source-only"), ("adversarial", "bn-control"), ("entropy", "bn-control")):
        assert f"{a} - {b}" in printed
