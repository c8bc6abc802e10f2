"""Tests of densemtl_lab.step_cost: the Trainer's own step timed on held samples, per gradient aggregator."""

from __future__ import annotations

import statistics

import pytest

from densemtl_lab.config import get_profile, override
from densemtl_lab.data.build import build_dataset
from densemtl_lab.step_cost import HeldSamples, StepCost, aggregator_costs, relative_costs, step_cost

SMOKE = override(get_profile("smoke", quiet=True, device="cpu"), "train.amp=off", "train.conflict_every=2")


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    dataset = build_dataset(SMOKE.data, "train", tasks=SMOKE.model.task_names)
    return [dataset[index] for index in range(3 * SMOKE.train.batch_size)]


def test_held_samples_give_back_what_they_hold(samples):
    held = HeldSamples(samples)
    assert len(held) == len(samples) and held[2] is samples[2]


def test_each_aggregator_is_timed_on_its_own_trainer_with_the_conflict_log_off(samples):
    costs = aggregator_costs(SMOKE, samples, ["none", "upgrad"], warmup=1, steps=2)
    assert list(costs) == ["none", "upgrad"]
    for cost in costs.values():
        assert len(cost.step_walls) == 2 and cost.wall_s == statistics.median(cost.step_walls)
        assert cost.wall_s > 0 and cost.cpu_s > 0
    assert costs["none"].last_weights is None
    weights = costs["upgrad"].last_weights  # UPGrad's weights of the tasks at its last step
    assert set(weights) == set(SMOKE.model.task_names) and all(weight > 0 for weight in weights.values())


def test_relative_costs_divide_by_the_reference():
    costs = {"none": StepCost(0.5, 0.4, (0.5,), None), "mgda": StepCost(1.5, 1.2, (1.5,), {"semseg": 1.0})}
    assert relative_costs(costs) == {"none": 1.0, "mgda": 3.0}
    with pytest.raises(KeyError, match="no 'pcgrad'"):
        relative_costs(costs, reference="pcgrad")


def test_too_few_samples_are_named_with_the_number_needed(samples):
    with pytest.raises(ValueError, match=rf"needs steps >= 1, warmup >= 0 and {4 * SMOKE.train.batch_size} samples"):
        step_cost(SMOKE, samples, warmup=1, steps=3)
