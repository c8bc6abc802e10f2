"""Notebook 05 (the attention explorer) runs headless, draws its static grid and records its numbers."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

PAIRS = {"semseg<-depth", "semseg<-normals", "depth<-semseg", "depth<-normals", "normals<-semseg", "normals<-depth"}


def test_notebook_05_explores_the_attention_of_one_scene(execute_notebook, notebook_outputs) -> None:
    metrics, executed = execute_notebook("05_attention_maps")
    assert metrics["profile"] == "smoke"
    assert metrics["grid"] == [4, 8]  # smoke images are 32x64: H/2 / 4 x W/2 / 4
    assert set(metrics["attention_entropy"]) == PAIRS == set(metrics["alpha_mean_abs"])
    assert all(0.0 <= value <= 1.0 + 1e-9 for value in metrics["attention_entropy"].values())
    for name in ("trained", "alpha = 0"):
        results = metrics["ablation"][name]
        assert set(results) == {"semseg", "depth", "normals"}
        assert all(math.isfinite(v) for task in results.values() for v in task.values() if v is not None)
    figures = notebook_outputs / "05_attention_maps" / "figures"
    assert {"attention_grid.png", "one_query.png", "pair_statistics.png", "ablation.png", "course_pair_statistics.png",
            "course_attention_grid.png"} <= {path.name for path in figures.iterdir()}
    cells = {cell.get("id"): cell for cell in executed.cells}
    for grid in ("cell-10", "cell-course-5"):  # the static fallback, for the learner's model and the course one
        assert any("image/png" in output.get("data", {}) for output in cells[grid].outputs)


def test_notebook_05_shows_the_shipped_course_model_and_what_its_study_found(execute_notebook) -> None:
    from densemtl_lab.study import load_shipped
    from densemtl_lab.viz.explorer import load_caches
    from densemtl_lab.viz.studies import attention_findings, attention_goals

    _, executed = execute_notebook("05_attention_maps")
    cells = {cell.get("id"): cell for cell in executed.cells}
    about = load_caches()[1]
    described = "".join(output.get("text", "") for output in cells["cell-course-2"].outputs)
    assert described.startswith(f"course DenseMTL: course profile, seed {about['seed']}, step {about['step']}, "
                                "target-domain validation scene 0")
    assert f"semseg mIoU {about['metrics']['semseg']['mIoU']:.2f}" in described
    findings = "".join(output.get("text", "") for output in cells["cell-course-6"].outputs)
    assert findings.strip() == attention_findings(load_shipped("architectures", "course")).strip()
    goals = "".join(output.get("text", "") for output in cells["cell-course-8"].outputs)
    assert goals.strip() == attention_goals(load_shipped("architectures", "course")).strip()  # from the file

