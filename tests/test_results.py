"""Tests for densemtl_lab.viz.results: results-table rows, seeds, parameter counts, loss curves."""

from __future__ import annotations

import math

import pytest
from torch import nn

from densemtl_lab.viz.results import (
    ResultsError,
    loss_curves,
    nested,
    parameter_count,
    profile_seeds,
    results_row,
)

BASELINES = {0: {"semseg": 40.0, "depth": 5.0}, 1: {"semseg": 40.0, "depth": 5.0}}


@pytest.mark.parametrize("profile, seed, seeds", [
    ("smoke", 0, [0]), ("quick", 5, [5]), ("full", 0, [0, 1, 2]), ("paper-synthia", 42, [42, 43, 44]),
])
def test_profile_seeds(profile: str, seed: int, seeds: list[int]) -> None:
    assert profile_seeds(profile, seed) == seeds


def test_parameter_count_sums_networks_and_skips_frozen_weights() -> None:
    frozen = nn.Linear(4, 1)
    frozen.bias.requires_grad_(False)
    assert parameter_count(nn.Linear(3, 2)) == 8
    assert parameter_count(nn.Linear(3, 2), frozen) == 8 + 4


def test_one_seed_row_by_hand() -> None:
    # semseg: +100 (50 - 40) / 40 = +25; depth (lower is better): -100 (4 - 5) / 5 = +20; mean 22.5
    metrics = {0: {"semseg": {"mIoU": 50.0, "pixel_acc": 90.0}, "depth": {"rmse": 4.0, "abs_rel": 0.1}}}
    row = results_row("mtl", "DS", metrics, BASELINES, params=2_345_678)
    assert row == {"model": "mtl", "tasks": "SD", "semseg/mIoU": 50.0, "depth/rmse": 4.0, "delta_m": 22.5,
                   "seeds": [0], "params_M": 2.346}


def test_seeds_are_averaged_and_delta_m_gets_a_spread() -> None:
    metrics = {1: {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 5.0}},  # delta_m 0
               0: {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 4.0}}}  # delta_m 22.5
    row = results_row("densemtl", "SD", metrics, BASELINES, params=10)
    assert row["seeds"] == [0, 1]
    assert (row["semseg/mIoU"], row["depth/rmse"], row["delta_m"]) == (45.0, 4.5, 11.25)
    assert row["delta_m_std"] == pytest.approx(22.5 / math.sqrt(2))


def test_single_task_models_score_zero_against_themselves() -> None:
    metrics = {0: {"semseg": {"mIoU": 40.0}, "depth": {"rmse": 5.0}}}
    assert results_row("stl", "SD", metrics, BASELINES, params=1)["delta_m"] == 0.0


def test_a_zero_baseline_gives_no_delta_m() -> None:
    metrics = {0: {"semseg": {"mIoU": 3.0}, "depth": {"rmse": 5.0}}}
    row = results_row("mtl", "SD", metrics, {0: {"semseg": 0.0, "depth": 5.0}}, params=1)
    assert row["delta_m"] is None and row["semseg/mIoU"] == 3.0
    assert nested([row]) == {"mtl": {"semseg": {"mIoU": 3.0}, "depth": {"rmse": 5.0}}}


@pytest.mark.parametrize("metrics, baselines, message", [
    ({}, BASELINES, "no runs of model 'mtl'"),
    ({2: {"semseg": {"mIoU": 1.0}, "depth": {"rmse": 1.0}}}, BASELINES, r"seed\(s\) \[2\]"),
    ({0: {"semseg": {"mIoU": 1.0}}}, BASELINES, "no depth/rmse"),
])
def test_results_row_errors(metrics, baselines, message: str) -> None:
    with pytest.raises(ResultsError, match=message):
        results_row("mtl", "SD", metrics, baselines, params=1)


def test_nested_feeds_the_metrics_table() -> None:
    rows = [{"model": "mtl", "tasks": "SD", "semseg/mIoU": 50.0, "depth/rmse": 4.0, "delta_m": 22.5,
             "seeds": [0], "params_M": 1.0}]
    assert nested(rows) == {"mtl": {"semseg": {"mIoU": 50.0}, "depth": {"rmse": 4.0}, "delta_m": 22.5}}


def _history(losses: list[float]) -> dict:
    return {"steps": [{"step": i + 1, "loss": v, "loss/semseg": v / 2, "loss/depth": v / 2}
                      for i, v in enumerate(losses)], "evals": []}


def test_loss_curves_one_trace_per_run_and_key_with_a_menu() -> None:
    single = {"steps": [{"step": 1, "loss": 3.0, "loss/semseg": 3.0}]}
    figure = loss_curves({"mtl": _history([4.0, 2.0, 1.0]), "stl S": single}, smoothing=0.5)
    traces = [(trace.name, trace.visible) for trace in figure.data]
    # "loss" (multi-task runs only), then "loss/semseg", then "loss/depth"
    assert traces == [("mtl", True), ("mtl", False), ("stl S", False), ("mtl", False)]
    # bias-corrected EMA with 0.5: 4, (0.5*2 + 0.25*4) / 0.75 = 8/3
    assert list(figure.data[0].y[:2]) == pytest.approx([4.0, 8 / 3])
    buttons = figure.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["loss", "loss/semseg", "loss/depth"]
    assert buttons[1].args[0]["visible"] == [False, True, True, False]
    assert figure.layout.xaxis.title.text == "step"


def test_loss_curves_name_a_missing_column() -> None:
    with pytest.raises(ResultsError, match="loss/normals"):
        loss_curves({"mtl": _history([1.0])}, keys=["loss/normals"])
