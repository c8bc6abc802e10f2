"""Tests of densemtl_lab.weighting: fixed reference weights, uncertainty gradients, DWA windows and state."""

from __future__ import annotations

import math

import pytest
import torch

from densemtl_lab.losses import MultiTaskLoss
from densemtl_lab.weighting import (
    DynamicWeightAverage, FixedWeighting, UncertaintyWeighting, WeightingError, build_weighting,
)


def _losses(**values: float) -> dict[str, torch.Tensor]:
    return {task: torch.tensor(value, requires_grad=True) for task, value in values.items()}


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [
        ("SD", {"semseg": 50.0, "depth": 1.0}),
        ("SDN", {"semseg": 100.0, "depth": 1.0, "normals": 100.0}),
        ("SDNE", {"semseg": 100.0, "depth": 1.0, "normals": 100.0, "edges": 50.0}),
        ("D", {"depth": 1.0}),
    ],
)
def test_fixed_weights_default_to_the_reference(tasks, expected):
    assert MultiTaskLoss(tasks).current_weights() == expected


def test_fixed_total_and_custom_weights():
    weighting = build_weighting("fixed", ("semseg", "depth"), {"semseg": 2.0, "depth": 3.0})
    assert isinstance(weighting, FixedWeighting)
    assert weighting(_losses(semseg=1.5, depth=0.5)).item() == pytest.approx(2 * 1.5 + 3 * 0.5)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"semseg": 1.0}, r"missing \['depth'\]"),
        ({"semseg": 1.0, "depth": 1.0, "edges": 1.0}, r"unexpected \['edges'\]"),
        ({"semseg": -1.0, "depth": 1.0}, "finite and >= 0"),
    ],
)
def test_bad_weights_raise(weights, message):
    with pytest.raises(WeightingError, match=message):
        build_weighting("fixed", ("semseg", "depth"), weights)


def test_bad_strategy_options_raise():
    with pytest.raises(WeightingError, match="weighting='gradnorm' is unknown"):
        build_weighting("gradnorm", ("semseg",))
    with pytest.raises(WeightingError, match="dwa_temperature"):
        build_weighting("dwa", ("semseg",), dwa_temperature=0.0)
    with pytest.raises(WeightingError, match="dwa_window"):
        build_weighting("dwa", ("semseg",), dwa_window=0)


def test_uncertainty_starts_at_half_and_its_gradient_signs():
    criterion = MultiTaskLoss("SD", weighting="uncertainty")
    weighting = criterion.weighting
    assert isinstance(weighting, UncertaintyWeighting)
    assert list(criterion.parameters()) == [weighting.log_variance]
    assert criterion.current_weights() == {"semseg": 0.5, "depth": 0.5}
    losses = _losses(semseg=2.0, depth=0.5)
    total = weighting(losses)
    # s = 0: total = 0.5 * (2 + 0.5) + 0; d/ds_t = -0.5 exp(-s) L_t + 0.5 = (-0.5, +0.25).
    assert total.item() == pytest.approx(1.25)
    total.backward()
    assert weighting.log_variance.grad.tolist() == pytest.approx([-0.5, 0.25])
    assert losses["semseg"].grad.item() == pytest.approx(0.5)  # a positive weight on every loss


def test_uncertainty_total_can_be_negative():
    weighting = build_weighting("uncertainty", ("depth",))
    with torch.no_grad():
        weighting.log_variance.fill_(math.log(0.1))
    # at the optimum s = log L: 0.5 + 0.5 log 0.1 < 0
    assert weighting(_losses(depth=0.1)).item() == pytest.approx(0.5 + 0.5 * math.log(0.1), rel=1e-5)


def _feed(criterion: MultiTaskLoss | DynamicWeightAverage, steps: list[tuple[float, float]]) -> list[dict]:
    weighting = criterion.weighting if isinstance(criterion, MultiTaskLoss) else criterion
    seen = []
    for semseg, depth in steps:
        seen.append(weighting.current_weights())
        weighting(_losses(semseg=semseg, depth=depth))
    return seen


def test_dwa_equal_weights_for_two_windows_then_softmax_of_ratios():
    weighting = build_weighting("dwa", ("semseg", "depth"), dwa_window=2, dwa_temperature=2.0)
    # window means: semseg 2 then 2 (r = 1); depth 4 then 2 (r = 0.5).
    seen = _feed(weighting, [(2.0, 3.0), (2.0, 5.0), (2.0, 2.0), (2.0, 2.0)])
    assert all(w == {"semseg": 1.0, "depth": 1.0} for w in seen)
    # lambda = 2 softmax((1, 0.5) / 2) = (2 / (1 + e^-0.25), 2 / (1 + e^0.25))
    weights = weighting.current_weights()
    assert weights["semseg"] == pytest.approx(2 / (1 + math.exp(-0.25)))
    assert weights["depth"] == pytest.approx(2 / (1 + math.exp(0.25)))
    assert sum(weights.values()) == pytest.approx(2.0)
    total = weighting(_losses(semseg=1.0, depth=1.0))
    assert total.item() == pytest.approx(2.0)  # lambdas apply to the losses of the next window


def test_dwa_multiplies_static_weights_and_skips_eval_steps():
    weighting = build_weighting("dwa", ("semseg", "depth"), {"semseg": 10.0, "depth": 1.0}, dwa_window=1)
    weighting.eval()
    _feed(weighting, [(1.0, 1.0), (5.0, 1.0), (1.0, 1.0)])
    assert weighting.current_weights() == {"semseg": 10.0, "depth": 1.0}  # nothing recorded
    weighting.train()
    _feed(weighting, [(1.0, 1.0), (2.0, 1.0)])  # r = (2, 1)
    lam = 2 / (1 + math.exp(-0.5))
    assert weighting.current_weights()["semseg"] == pytest.approx(10.0 * lam)
    assert weighting.current_weights()["depth"] == pytest.approx(2 - lam)


def test_dwa_state_dict_round_trip_resumes_identically(tmp_path):
    steps = [(1.0 + 0.1 * i, 2.0 - 0.05 * i * i) for i in range(11)]
    original = MultiTaskLoss("SD", weighting="dwa", dwa_window=3)
    _feed(original, steps[:7])  # two windows done, one step into the third
    torch.save(original.state_dict(), tmp_path / "criterion.pt")
    resumed = MultiTaskLoss("SD", weighting="dwa", dwa_window=3)
    resumed.load_state_dict(torch.load(tmp_path / "criterion.pt", weights_only=True))
    assert _feed(resumed, steps[7:]) == _feed(original, steps[7:])
    assert resumed.current_weights() == original.current_weights() != {"semseg": 1.0, "depth": 1.0}


def test_dwa_state_for_other_tasks_is_refused():
    state = MultiTaskLoss("SD", weighting="dwa").state_dict()
    with pytest.raises(WeightingError, match="resume with the same tasks"):
        MultiTaskLoss("SN", weighting="dwa").load_state_dict(state)
