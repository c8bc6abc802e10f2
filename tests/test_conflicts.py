"""Tests of densemtl_lab.conflicts: task gradients on the shared encoder, their norms and cosines, in the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from densemtl_lab.config import ConfigError, get_profile, override
from densemtl_lab.conflicts import ConflictLog, batch_jacobian, conflict_statistics, task_gradients
from densemtl_lab.evaluation import to_device
from densemtl_lab.losses import task_losses
from densemtl_lab.train import Trainer

SMOKE = override(get_profile("smoke", quiet=True, device="cpu"), "model.name=mtl", "model.tasks=SDN")


@pytest.fixture(scope="module")
def step_losses():
    """A real MTL on S, D, N and the unweighted task losses of one training batch, graph attached."""
    trainer = Trainer(SMOKE)
    batch = to_device(next(trainer._batches()), trainer.device, False)
    with task_losses(trainer.criterion) as losses:
        trainer.criterion(trainer.network(batch["image"]), batch)
    return trainer, losses


def test_the_captured_losses_are_the_criterions_and_still_differentiable(step_losses):
    trainer, losses = step_losses
    assert list(losses) == ["semseg", "depth", "normals"]
    assert all(loss.requires_grad and loss.ndim == 0 for loss in losses.values())


def test_two_copies_of_a_task_give_cosine_one_and_its_negated_loss_minus_one(step_losses):
    trainer, losses = step_losses
    log = ConflictLog(trainer.model, ["copy", "same", "negated"], every=1)
    semseg = losses["semseg"]
    statistics = log.measure({"copy": semseg, "same": semseg, "negated": -semseg},
                             {"copy": 1.0, "same": 1.0, "negated": 1.0})
    assert statistics["grad_cosine/copy~same"] == pytest.approx(1.0, abs=1e-6)
    assert statistics["grad_cosine/copy~negated"] == pytest.approx(-1.0, abs=1e-6)
    assert statistics["grad_norm/copy"] > 0
    assert statistics["grad_norm/copy"] == pytest.approx(statistics["grad_norm/negated"])


def test_the_weights_scale_the_norms_not_the_cosines(step_losses):
    trainer, losses = step_losses
    log = ConflictLog(trainer.model, ["semseg", "depth", "normals"], every=1)
    plain = log.measure(losses, {"semseg": 1.0, "depth": 1.0, "normals": 1.0})
    weighted = log.measure(losses, {"semseg": 50.0, "depth": 1.0, "normals": 10.0})
    assert weighted["grad_norm/semseg"] == pytest.approx(50.0 * plain["grad_norm/semseg"], rel=1e-4)
    assert weighted["grad_norm/normals"] == pytest.approx(10.0 * plain["grad_norm/normals"], rel=1e-4)
    for pair in ("semseg~depth", "semseg~normals", "depth~normals"):
        assert weighted[f"grad_cosine/{pair}"] == pytest.approx(plain[f"grad_cosine/{pair}"], abs=1e-5)
        assert -1.0 <= plain[f"grad_cosine/{pair}"] <= 1.0


def test_the_gradients_are_those_of_autograd_and_the_loss_scale_cancels(step_losses):
    trainer, losses = step_losses
    shared = [param for param in trainer.model.encoder.parameters()]
    rows = task_gradients([losses["depth"]], shared)
    expected = torch.autograd.grad(losses["depth"], shared, retain_graph=True)
    assert torch.allclose(rows[0], torch.cat([grad.reshape(-1) for grad in expected]))
    assert torch.allclose(task_gradients([losses["depth"]], shared, scale=1024.0), rows, rtol=1e-5, atol=1e-9)


def test_statistics_of_known_vectors_and_a_zero_gradient():
    gradients = torch.tensor([[3.0, 4.0], [4.0, -3.0], [0.0, 0.0]])
    statistics = conflict_statistics(gradients, ["a", "b", "c"])
    assert statistics["grad_norm/a"] == 5.0 and statistics["grad_cosine/a~b"] == 0.0  # orthogonal
    assert math.isnan(statistics["grad_cosine/a~c"])  # no direction to compare


def test_the_trainer_logs_every_nth_step_and_the_measurement_changes_nothing():
    config = override(SMOKE, "train.conflict_every=2")
    logged = Trainer(config)  # each trainer seeds the global generators: build and train one after the other
    logged.fit()
    plain = Trainer(SMOKE)
    plain.fit()
    rows = logged.history.steps
    keys = {"grad_norm/semseg", "grad_norm/depth", "grad_norm/normals",
            "grad_cosine/semseg~depth", "grad_cosine/semseg~normals", "grad_cosine/depth~normals"}
    assert [keys <= set(row) for row in rows] == [False, True, False, True]
    assert all(row["grad_norm/depth"] > 0 and -1 <= row["grad_cosine/semseg~depth"] <= 1 for row in rows[1::2])
    for (name, mine), theirs in zip(logged.model.state_dict().items(), plain.model.state_dict().values()):
        assert torch.equal(mine, theirs), name  # measuring is read-only: the same training


def test_conflict_every_must_be_positive():
    with pytest.raises(ConfigError, match="train.conflict_every=0 must be >= 1"):
        override(SMOKE, "train.conflict_every=0")


def test_the_log_runs_beside_an_aggregator_in_bf16_and_sees_the_gradients_before_aggregation():
    config = override(SMOKE, "train.conflict_every=1", "train.aggregator=mgda", "train.amp=bf16", "train.steps=2")
    trainer = Trainer(config)
    trainer.fit()
    assert all(-1.0 <= row["grad_cosine/depth~normals"] <= 1.0 and row["grad_norm/semseg"] > 0
               for row in trainer.history.steps)


def test_the_jacobian_of_a_batch_has_a_row_per_task_over_the_encoders_parameters(step_losses):
    trainer, _ = step_losses
    samples = [trainer.train_set[index] for index in range(2)]
    trainer.model.train()
    jacobian = batch_jacobian(trainer.model, SMOKE, samples)
    encoder = sum(param.numel() for param in trainer.model.encoder.parameters())
    assert jacobian.shape == (3, encoder) and bool((jacobian.norm(dim=1) > 0).all())
    assert trainer.model.training  # its mode is kept
    weights = trainer.criterion.current_weights()
    log = ConflictLog(trainer.model, ["semseg", "depth", "normals"], every=1)
    trainer.model.eval()
    with task_losses(trainer.criterion) as losses:
        batch = to_device(torch.utils.data.default_collate(samples), trainer.device, False)
        trainer.criterion(trainer.model(batch["image"]), batch)
    trainer.model.train()
    again = log.measure(losses, weights)
    assert float(jacobian[1].norm()) == pytest.approx(again["grad_norm/depth"], rel=1e-5)
