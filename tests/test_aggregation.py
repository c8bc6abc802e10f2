"""Gradient aggregation of the shared encoder through torchjd (train.aggregator, densemtl_lab.aggregation)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import default_collate

from densemtl_lab import aggregation
from densemtl_lab.aggregation import (
    AGGREGATORS, EXTRA_INSTALL, GradientAggregation, MissingExtraError, build_aggregator, missing_solvers,
)
from densemtl_lab.config import AGGREGATOR_NAMES, ConfigError, get_profile, override
from densemtl_lab.data.build import build_dataset
from densemtl_lab.losses import MultiTaskLoss
from densemtl_lab.models import build_model
from densemtl_lab.tasks import TASKS
from densemtl_lab.train import Trainer

SMOKE = get_profile("smoke", quiet=True, device="cpu")
# float32 (the vmap path of mtl_backward) unless a test asks for bf16; one evaluation batch.
BASE = override(SMOKE, "train.amp=off", "train.eval_batches=1")


def _offered(name: str, *more: str):
    """(`name`, *more) as parameters, skipped with the install command when its solvers are missing."""
    missing = missing_solvers(name)
    return pytest.param(name, *more, id="-".join((name, *more)),
                        marks=pytest.mark.skipif(bool(missing), reason=f"needs {missing}: {EXTRA_INSTALL}"))


OFFERED = [_offered(name) for name in AGGREGATORS]


# --- configuration ---------------------------------------------------------------------------------

def test_config_and_module_offer_the_same_aggregators():
    assert AGGREGATOR_NAMES == ("none", *AGGREGATORS)
    assert SMOKE.train.aggregator == "none"
    assert override(SMOKE, "train.aggregator=none").train.aggregator == "none"  # -p reads none as null


def test_an_unknown_aggregator_is_refused_with_the_valid_names():
    valid = ", ".join(AGGREGATOR_NAMES)
    with pytest.raises(ConfigError, match=f"train.aggregator='gradnorm' is unknown; use one of {valid}$"):
        override(SMOKE, "train.aggregator=gradnorm")
    with pytest.raises(ConfigError, match=f"use one of {valid}$"):
        build_aggregator("gradnorm", 3)


@pytest.mark.parametrize("assignments, message", [
    (["train.weighting=uncertainty"], "takes the fixed loss weights, not train.weighting='uncertainty'"),
    (["train.weighting=dwa"], "takes the fixed loss weights, not train.weighting='dwa'"),
    (["train.amp=fp16"], "cannot run with train.amp='fp16'"),
    (["model.tasks=S"], "combines the gradients of several tasks; model.tasks=S has one"),
    (["adapt.method=adversarial", "data.target_dataset=toy"], "adaptation losses would reach the encoder"),
])
def test_combinations_that_make_no_sense_are_refused(assignments, message):
    with pytest.raises(ConfigError, match=message):
        override(SMOKE, "train.aggregator=mgda", *assignments)


def test_the_trainer_refuses_an_fp16_scaler():
    trainer = SimpleNamespace(config=override(SMOKE, "train.aggregator=mean"),
                              context=SimpleNamespace(enabled=False), scaler=object())
    with pytest.raises(ConfigError, match="cannot run with fp16 autocast and its gradient scaler"):
        Trainer._build_aggregation(trainer)


def test_a_missing_solver_names_the_extra(monkeypatch):
    monkeypatch.setattr(aggregation, "find_spec", lambda name: None if name == "cvxpy" else object())
    for name in ("cagrad", "nash-mtl"):
        with pytest.raises(MissingExtraError) as error:
            build_aggregator(name, 3)
        assert str(error.value) == f"train.aggregator={name!r} needs cvxpy: pip install 'densemtl-lab[aggregators]'"
    assert isinstance(error.value, ConfigError)  # the command line reports it in one line, exit status 2
    build_aggregator("mgda", 3)  # needs no extra


# --- wiring on a fixed batch ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def fixed_batch():
    dataset = build_dataset(BASE.data, "train", tasks=BASE.model.task_names)
    return default_collate([dataset[0], dataset[1]]), dataset.num_classes


def _network(name: str, num_classes: int):
    torch.manual_seed(0)
    options = dataclasses.replace(BASE.model, name=name).build_options()
    model = build_model(name, BASE.model.task_names, num_classes=num_classes, **options)
    return model.train(), MultiTaskLoss(BASE.model.task_names)


def _weighted_losses(model, criterion, batch) -> list[torch.Tensor]:
    """w_t L_t by hand (the trainer reads them from the criterion); dropout seeded like every forward."""
    torch.manual_seed(0)
    outputs = model(batch["image"])
    weights = criterion.current_weights()
    return [weights[t] * criterion.task_loss(t, outputs[t], batch[TASKS[t].label_key]) for t in criterion.tasks]


def _aggregated_step(name: str, model, criterion, batch, seed: int = 1) -> None:
    """The trainer's backward with aggregator `name` (grads zeroed first)."""
    model.zero_grad(set_to_none=True)
    step = GradientAggregation(name, model, criterion, criterion.tasks)
    torch.manual_seed(0)
    with step.capture():
        criterion(model(batch["image"]), batch)
    torch.manual_seed(seed)  # PCGrad's task orders
    step.backward()
    step.close()


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, where: str = "", rel: float = 1e-4) -> None:
    """Equal up to float32 rounding of sums taken in another order: |a - e| <= rel * max|e| everywhere."""
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max())
    assert error <= rel * scale + 1e-12, f"{where}: max |difference| {error:.3g} against max |value| {scale:.3g}"


@pytest.fixture(scope="module")
def densemtl_jacobian(fixed_batch):
    """DenseMTL SDN, the batch, and the encoder Jacobian built by hand: one autograd.grad per task, stacked."""
    batch, num_classes = fixed_batch
    model, criterion = _network("densemtl", num_classes)
    shared = list(model.encoder.parameters())
    losses = _weighted_losses(model, criterion, batch)
    jacobian = torch.stack([_flat(torch.autograd.grad(loss, shared, retain_graph=True)) for loss in losses])
    return model, criterion, batch, jacobian


@pytest.mark.parametrize("name", OFFERED)
def test_the_encoder_gets_the_aggregation_of_the_hand_built_jacobian(densemtl_jacobian, name):
    model, criterion, batch, jacobian = densemtl_jacobian
    assert jacobian.shape == (3, sum(p.numel() for p in model.encoder.parameters()))
    _aggregated_step(name, model, criterion, batch)
    torch.manual_seed(1)
    expected = build_aggregator(name, 3)(jacobian)
    _assert_close(_flat(p.grad for p in model.encoder.parameters()), expected, name)


@pytest.mark.parametrize("model_name", ["mtl", "densemtl"])
def test_each_decoder_gets_its_own_task_gradient(fixed_batch, model_name):
    """mtl: a whole decoder sees only its task. densemtl: its heads and level 0 too; the exchange and the
    levels that feed it (4..1) get the gradient of the weighted sum, as without aggregation."""
    batch, num_classes = fixed_batch
    model, criterion = _network(model_name, num_classes)
    losses = _weighted_losses(model, criterion, batch)
    expected = {}
    for index, task in enumerate(criterion.tasks):
        decoder = model.decoders[task]
        own = [*decoder.parameters()] if model_name == "mtl" else [*decoder.levels[0].parameters(),
                                                                    *decoder.heads.parameters()]
        expected.update(zip(own, torch.autograd.grad(losses[index], own, retain_graph=True)))
    if model_name == "densemtl":
        mixed = [p for task in criterion.tasks for level in model.decoders[task].levels[1:] for p in level.parameters()]
        mixed += list(model.exchange.parameters())
        expected.update(zip(mixed, torch.autograd.grad(sum(losses), mixed, allow_unused=True)))
    encoder = {id(p) for p in model.encoder.parameters()}
    assert len(expected) == sum(id(p) not in encoder for p in model.parameters())  # every task-side parameter
    _aggregated_step("mgda", model, criterion, batch)
    names = {param: name for name, param in model.named_parameters()}
    for param, grad in expected.items():
        _assert_close(param.grad, grad if grad is not None else torch.zeros_like(param), names[param])


def test_gradients_keep_the_memory_layout_of_channels_last_weights(fixed_batch):
    """Fused Adam pairs elements by memory position: a contiguous gradient of a channels_last weight
    would update the wrong elements."""
    batch, num_classes = fixed_batch
    model, criterion = _network("mtl", num_classes)
    model.to(memory_format=torch.channels_last)
    _aggregated_step("mean", model, criterion, batch)
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.stride() == param.stride(), name


def test_sum_through_torchjd_is_the_ordinary_backward(densemtl_jacobian):
    model, criterion, batch, _ = densemtl_jacobian
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    total, _ = criterion(model(batch["image"]), batch)
    total.backward()
    ordinary = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    _aggregated_step("sum", model, criterion, batch)
    through_torchjd = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert ordinary.keys() == through_torchjd.keys()
    for name, grad in ordinary.items():
        _assert_close(through_torchjd[name], grad, name)


# --- training, checkpoints and resume ------------------------------------------------------------

@pytest.mark.parametrize("name, amp", [*(_offered(name, "off") for name in AGGREGATORS), _offered("upgrad", "bf16")])
def test_training_changes_the_weights_and_a_resumed_run_matches_the_straight_one(tmp_path, name, amp):
    """Two steps straight, against one step, a checkpoint and one resumed step (S and D: half the cost).

    bf16 autocast takes mtl_backward's one-task-at-a-time path (see GradientAggregation.backward).
    """
    config = override(BASE, f"train.aggregator={name}", f"train.amp={amp}", "model.tasks=SD", "train.steps=2",
                      "train.eval_every=2", "train.checkpoint_every=2")
    straight = Trainer(config)
    before = {key: value.clone() for key, value in straight.model.state_dict().items()}
    result = straight.fit()
    after = result.model.state_dict()
    assert not torch.equal(after["encoder.conv1.weight"], before["encoder.conv1.weight"])
    assert not torch.equal(after["decoders.depth.heads.0.weight"], before["decoders.depth.heads.0.weight"])
    run_dir = tmp_path / "run"
    assert Trainer(config, run_dir).fit(until=1).step == 1
    resumed_trainer = Trainer(config, run_dir, resume=True)
    resumed = resumed_trainer.fit()
    assert resumed.step == 2 and resumed.history.steps == result.history.steps
    for key, value in after.items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    own, theirs = straight.aggregation.state_dict(), resumed_trainer.aggregation.state_dict()
    assert own.keys() == theirs.keys() and own["name"] == name
    for key in own:
        assert torch.equal(own[key], theirs[key]) if torch.is_tensor(own[key]) else own[key] == theirs[key], key
