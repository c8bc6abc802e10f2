"""Notebook 04 (xTAM and mTEB step by step, DenseMTL vs MTL vs STL) runs headless and records its numbers."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

PAIRS = {"semseg<-depth", "semseg<-normals", "depth<-semseg", "depth<-normals", "normals<-semseg", "normals<-depth"}


def _check_row(row: dict) -> None:
    assert 0.0 <= row["semseg/mIoU"] <= 100.0
    assert 0.0 < row["depth/rmse"] < 100.0
    assert 0.0 <= row["normals/mean_angle"] <= 180.0
    assert row["delta_m"] is None or math.isfinite(row["delta_m"])  # None: a smoke baseline of 0
    assert row["params_M"] > 0


def test_notebook_04_builds_the_xtam_and_compares_the_models(execute_notebook, notebook_outputs) -> None:
    metrics, executed = execute_notebook("04_xtam_mteb")
    assert metrics["profile"] == "smoke"
    assert metrics["xtam_params_c128"] == 369_920  # docs/faithfulness.md, "Parameter counts"
    # C = 16 in smoke: one xTAM 2,320 + 2,304 + 880 + 416 = 5,920; six of them + 3 P_i of 544
    assert metrics["exchange_params"] == 6 * 5_920 + 3 * 544
    comparison = metrics["comparison"]
    assert set(comparison) == {"stl", "mtl", "densemtl"}
    for row in comparison.values():
        _check_row(row)
    assert comparison["stl"]["delta_m"] in (None, 0.0)
    assert comparison["densemtl"]["params_M"] > comparison["mtl"]["params_M"]
    assert metrics["paths_max_abs_diff"] < 1e-4
    assert set(metrics["alpha_mean_abs"]) == PAIRS == set(metrics["attention_entropy"])
    assert all(0.0 <= value < 1.0 for value in metrics["alpha_mean_abs"].values())
    assert all(0.0 <= value <= 1.0 + 1e-9 for value in metrics["attention_entropy"].values())
    figures = {path.name for path in (notebook_outputs / "04_xtam_mteb" / "figures").iterdir()}
    assert {"study_delta_m_per_seed.png", "study_paired_differences.png"} <= figures
    from densemtl_lab.study import load_shipped
    from densemtl_lab.viz.studies import study_findings

    (findings,) = [cell for cell in executed.cells if cell.get("id") == "cell-exchange-study-2"]
    printed = "".join(output.get("text", "") for output in findings.outputs)
    assert printed.strip() == study_findings(load_shipped("exchange", "course")).strip()  # from the file
