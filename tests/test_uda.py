"""Domain adaptation: discriminator inputs, discriminators, the trainer's hook, the adaptation step, bad input."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from densemtl_lab import train as train_module
from densemtl_lab.cli import main
from densemtl_lab.config import ConfigError, get_profile
from densemtl_lab.data.toy import ToyScenes
from densemtl_lab.discriminator import DomainDiscriminators, OutputDiscriminator
from densemtl_lab.run_folder import default_run_dir
from densemtl_lab.tasks import TASK_ORDER, encode_depth
from densemtl_lab.tasks.base import self_information
from densemtl_lab.tasks.depth import normalised_depth
from densemtl_lab.tasks.normals import unit_normals
from densemtl_lab.train import Trainer, register_adaptation
from densemtl_lab.uda import (
    AdversarialAdaptation, DomainMismatchError, UnlabelledView, discriminator_input, discriminator_inputs,
    entropy_loss,
)


def smoke(method: str, **overrides):
    """The smoke profile on S+D, adapting to the toy target domain with tiny discriminators."""
    adapt = {"method": method, "discriminator_width": 4, **overrides.pop("adapt", {})}
    return get_profile("smoke", **{"quiet": True, "device": "cpu", "tasks": "SD", "target_dataset": "toy",
                                   "adapt": adapt, **overrides})


class LabelReadError(AssertionError):
    """A target label was read."""


class GuardedSample(Mapping):
    """A sample whose label keys raise when read (proves that adaptation never reads a target label)."""

    def __init__(self, sample: dict) -> None:
        self.sample = sample

    def __getitem__(self, key: str):
        if key in TASK_ORDER:
            raise LabelReadError(f"target label {key!r} was read")
        return self.sample[key]

    def __iter__(self):
        return iter(self.sample)

    def __len__(self) -> int:
        return len(self.sample)


class GuardedTarget(torch.utils.data.Dataset):
    """Toy target scenes whose samples guard their labels."""

    def __init__(self, scenes: ToyScenes) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> GuardedSample:
        return GuardedSample(self.scenes[index])


def guarded_target(config) -> GuardedTarget:
    return GuardedTarget(ToyScenes(8, size=config.data.size, domain="target", severity=0.5))


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {name for name, value in module.state_dict().items() if not torch.equal(before[name], value)}


# --- discriminator inputs --------------------------------------------------------------------------------

@pytest.mark.parametrize("classes", [2, 8, 19])
def test_self_information_sums_to_one_for_uniform_and_zero_for_one_hot(classes):
    uniform = self_information(torch.zeros(2, classes, 3, 4))
    assert uniform.shape == (2, classes, 3, 4)
    assert torch.allclose(uniform, torch.full_like(uniform, 1 / classes))  # -(1/C) log2(1/C) / log2 C
    assert torch.allclose(uniform.sum(dim=1), torch.ones(2, 3, 4))
    one_hot = torch.full((1, classes, 2, 2), -1000.0)
    one_hot[:, 1] = 1000.0
    assert torch.equal(self_information(one_hot), torch.zeros(1, classes, 2, 2))


def test_self_information_of_two_classes_at_one_quarter():
    logits = torch.tensor([0.0, math.log(3.0)]).reshape(1, 2, 1, 1)  # p = (1/4, 3/4)
    expected = torch.tensor([-0.25 * math.log2(0.25), -0.75 * math.log2(0.75)]).reshape(1, 2, 1, 1)
    assert torch.allclose(self_information(logits), expected)


def test_self_information_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        self_information(torch.zeros(1, 1, 2, 2))


def test_depth_map_is_min_max_normalised_with_the_valid_source_ground_truth():
    depth_m = torch.tensor([0.0, 1.0, 5.0, 80.0]).reshape(1, 1, 2, 2)  # 0: invalid (sky)
    codes = 65536 / (100 * depth_m + 1)  # 65536, 648.87, 130.81, 8.19
    low, high = codes[0, 0, 1, 1], codes[0, 0, 0, 1]
    result = normalised_depth(encode_depth(depth_m), depth_m)
    valid = depth_m > 0
    assert torch.allclose(result[valid], torch.tensor([1.0, (codes[0, 0, 1, 0] - low) / (high - low), 0.0]))
    assert result[valid].min() == 0 and result[valid].max() == 1
    negative = normalised_depth(torch.full((1, 1, 2, 2), -5.0), depth_m)  # ReLU first
    assert torch.allclose(negative, torch.full_like(negative, -low / (high - low)))


def test_depth_map_without_a_valid_source_pixel_is_an_error():
    with pytest.raises(ValueError, match="no valid depth pixel"):
        normalised_depth(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_normals_map_is_unit_length():
    pred = torch.tensor([3.0, 0.0, 4.0]).reshape(1, 3, 1, 1).repeat(2, 1, 2, 3) * torch.rand(2, 1, 2, 3).add(0.5)
    result = unit_normals(pred)
    assert torch.allclose(result.norm(dim=1), torch.ones(2, 2, 3))
    assert torch.allclose(result[0, :, 0, 0], torch.tensor([0.6, 0.0, 0.8]))


@pytest.mark.parametrize("task, channels", [("semseg", 19), ("depth", 1), ("normals", 3), ("edges", 2)])
def test_discriminator_input_is_resized_to_the_label_size(task, channels):
    depth_m = torch.full((2, 1, 16, 32), 10.0)
    maps = discriminator_input(task, torch.randn(2, channels, 8, 16), (16, 32), depth_m)
    assert maps.shape == (2, channels, 16, 32) and maps.dtype == torch.float32


def test_entropy_loss_is_the_mean_normalised_entropy():
    logits = torch.zeros(1, 4, 2, 2)
    logits[..., 0, :] = torch.tensor([1000.0, 0, 0, 0]).reshape(4, 1)  # top row one-hot: 0, bottom row uniform: 1
    assert entropy_loss(logits, (2, 2)).item() == pytest.approx(0.5)


# --- discriminators -----------------------------------------------------------------------------------

def test_discriminator_is_five_spectral_normalised_strided_convolutions():
    discriminator = OutputDiscriminator(3, width=4)
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 4), (4, 8), (8, 16), (16, 32), (32, 1)]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    relus = [m for m in discriminator.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(relus) == 4 and all(r.negative_slope == 0.2 for r in relus)
    assert discriminator(torch.randn(2, 3, 64, 128)).shape == (2, 1, 2, 4)


def test_discriminator_flips_whole_batches_at_random_only_in_training():
    discriminator = OutputDiscriminator(1, width=2)
    discriminator.layers = nn.Identity()
    maps = torch.arange(6.0).reshape(1, 1, 2, 3).repeat(2, 1, 1, 1)
    torch.manual_seed(0)
    seen = {bool(torch.equal(discriminator(maps), maps.flip(-1))) for _ in range(20)}
    assert seen == {True, False}
    discriminator.eval()
    assert all(torch.equal(discriminator(maps), maps) for _ in range(5))


def test_one_discriminator_per_task_and_scale_with_the_task_channels():
    discriminators = DomainDiscriminators([("semseg", 0), ("semseg", 1), ("depth", 0), ("normals", 1)],
                                          num_classes=7, width=2)
    first = {key: next(m for m in d.modules() if isinstance(m, nn.Conv2d)).in_channels
             for key, d in discriminators.items()}
    assert first == {"semseg_0": 7, "semseg_1": 7, "depth_0": 1, "normals_1": 3}


# --- the target set -----------------------------------------------------------------------------------

def test_unlabelled_view_passes_on_the_image_and_never_reads_a_label():
    target = guarded_target(smoke("adversarial"))
    with pytest.raises(LabelReadError):
        target[0]["semseg"]
    sample = UnlabelledView(target)[0]
    assert set(sample) == {"image", "K", "name", "domain"} and sample["image"].shape == (3, 32, 64)


def test_a_target_of_another_size_is_an_error_naming_both_datasets():
    config = smoke("adversarial")
    with pytest.raises(DomainMismatchError) as caught:
        Trainer(config, target_set=ToyScenes(8, size=(32, 32), domain="target"))
    message = str(caught.value)
    assert "target dataset ToyScenes(length=8, size=(32, 32), domain='target'" in message
    assert "gives 32x32 images but the source dataset ToyScenes(length=16, size=(32, 64)" in message


def test_a_target_size_that_differs_from_the_source_is_an_error():
    with pytest.raises(DomainMismatchError, match=r"gives 16x32 images but the source dataset .* gives 32x64"):
        Trainer(smoke("adversarial", target_size=(16, 32)))


def test_a_target_with_another_class_set_is_an_error_naming_both_counts():
    other = ToyScenes(8, size=(32, 64), domain="target")
    other.num_classes = 16
    with pytest.raises(DomainMismatchError, match=r"different class sets \(num_classes: 16 vs 19\)"):
        Trainer(smoke("entropy"), target_set=other)


# --- configuration ------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"adapt": {"method": "adversarial"}}, "needs a target domain; set data.target_dataset"),
    ({"adapt": {"method": "entropy"}, "target_dataset": "toy", "tasks": "D"}, "has no S"),
    ({"adapt": {"method": "advent"}}, "adapt.method='advent' is unknown"),
    ({"adapt": {"discriminator_width": 0}}, "discriminator_width=0 must be >= 1"),
])
def test_bad_adaptation_settings_are_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        get_profile("smoke", **changes)


@pytest.mark.parametrize("method, trained_on", [("none", "source"), ("oracle", "target")])
def test_source_only_and_oracle_differ_only_in_the_training_domain(method, trained_on):
    trainer = Trainer(smoke(method))
    assert (trainer.train_set.domain, trainer.val_set.domain) == (trained_on, "target")
    assert trainer.adaptation is None and trainer.loss_names == ["loss", "loss/semseg", "loss/depth"]


# --- the trainer's hook -------------------------------------------------------------------------------

class RecordingHook:
    """An adaptation hook that records what the trainer calls."""

    loss_names = ("recorded",)

    def __init__(self, trainer: Trainer, target_set) -> None:
        self.calls: list[str] = []

    def backward(self, batch, outputs) -> dict[str, torch.Tensor]:
        self.calls.append(f"backward {sorted(outputs)}")
        return {"recorded": torch.tensor(0.25)}

    def step(self, scaler) -> None:
        self.calls.append("step")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state) -> None:
        pass


def test_the_trainer_calls_the_registered_hook_of_its_method(monkeypatch):
    monkeypatch.setattr(train_module, "_ADAPTATIONS", {})
    register_adaptation("entropy", RecordingHook)
    trainer = Trainer(smoke("entropy"))
    values = trainer.train_step(next(trainer._batches()))
    assert trainer.adaptation.calls == ["backward ['depth', 'semseg']", "step"]
    assert trainer.loss_names[-1] == "loss/recorded" and values[-1] == 0.25


def test_a_method_without_a_registered_hook_says_what_to_import(monkeypatch):
    monkeypatch.setattr(train_module, "_ADAPTATIONS", {})
    with pytest.raises(ConfigError, match="import densemtl_lab.uda"):
        Trainer(smoke("adversarial"))
    with pytest.raises(ValueError, match="takes no adaptation hook"):
        register_adaptation("oracle", RecordingHook)


# --- the adaptation step ------------------------------------------------------------------------------

def test_one_adversarial_step_updates_network_and_discriminators_without_target_labels():
    config = smoke("adversarial")
    trainer = Trainer(config, target_set=guarded_target(config))
    adaptation = trainer.adaptation
    assert isinstance(adaptation, AdversarialAdaptation)
    assert list(adaptation.discriminators) == ["semseg_0", "semseg_1", "depth_0", "depth_1"]
    network, discriminators = snapshot(trainer.model), snapshot(adaptation.discriminators)
    values = trainer.train_step(next(trainer._batches()))
    assert trainer.loss_names[3:] == ["loss/adversarial", "loss/discriminator_source", "loss/discriminator_target"]
    assert len(values) == 6 and all(math.isfinite(v) for v in values)
    assert all(0.3 < v < 1.5 for v in values[4:])  # BCE of a fresh discriminator: near log 2
    assert changed(network, trainer.model) and changed(discriminators, adaptation.discriminators)
    assert all(p.requires_grad for p in adaptation.discriminators.parameters())


def _after_one_step(weight: float) -> tuple[dict, dict]:
    config = smoke("adversarial", adapt={"adversarial_weight": weight})
    trainer = Trainer(config, target_set=guarded_target(config))
    trainer.train_step(next(trainer._batches()))
    return snapshot(trainer.model), snapshot(trainer.adaptation.discriminators)


def test_the_adversarial_loss_reaches_the_network_but_not_the_frozen_discriminators():
    network_off, discriminators_off = _after_one_step(0.0)
    network_on, discriminators_on = _after_one_step(10.0)
    assert any(not torch.equal(network_off[k], network_on[k]) for k in network_off)
    assert all(torch.equal(discriminators_off[k], discriminators_on[k]) for k in discriminators_off)


def test_one_entropy_step_updates_the_network_without_target_labels():
    config = smoke("entropy")
    trainer = Trainer(config, target_set=guarded_target(config))
    network = snapshot(trainer.model)
    values = trainer.train_step(next(trainer._batches()))
    assert trainer.loss_names[-1] == "loss/entropy"
    assert 0 < values[-1] <= config.adapt.entropy_weight  # weight x normalised entropy in [0, 1]
    assert changed(network, trainer.model)


def test_discriminator_learning_rate_decays_as_a_polynomial():
    trainer = Trainer(smoke("adversarial", adapt={"discriminator_lr": 1e-3, "poly_power": 0.9}))
    scheduler = trainer.adaptation.scheduler
    assert [scheduler.lr_lambdas[0](step) for step in (0, 2, 4)] == [1.0, 0.5 ** 0.9, 0.0]
    assert trainer.adaptation.optimizer.param_groups[0]["betas"] == (0.9, 0.99)


def test_resuming_restores_discriminators_and_their_optimiser(tmp_path):
    config = smoke("adversarial", steps=2, eval_every=2, checkpoint_every=2)
    first = Trainer(config, tmp_path / "run")
    first.fit()
    resumed = Trainer(config, tmp_path / "run", resume=True)
    assert resumed.step == 2
    for key, value in first.adaptation.discriminators.state_dict().items():
        assert torch.equal(resumed.adaptation.discriminators.state_dict()[key], value), key
    assert resumed.adaptation.scheduler.last_epoch == 2
    assert resumed.adaptation.optimizer.state_dict()["state"][0]["step"] == 2


def test_an_adversarial_run_paused_half_way_ends_like_the_straight_run(tmp_path):
    config = smoke("adversarial", steps=4, eval_every=4, checkpoint_every=4)
    straight = Trainer(config, tmp_path / "straight")
    straight.fit()
    Trainer(config, tmp_path / "paused").fit(until=2)  # the lesson's "half-time"
    resumed = Trainer(config, tmp_path / "paused", resume=True)
    resumed.fit()
    modules = {"model": (straight.model, resumed.model),
               "discriminators": (straight.adaptation.discriminators, resumed.adaptation.discriminators)}
    for name, (expected, actual) in modules.items():
        for key, value in expected.state_dict().items():
            assert torch.equal(actual.state_dict()[key], value), f"{name}.{key}"
    assert resumed.history.steps == straight.history.steps


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the adversarial step under "
                    "CUDA autocast (bf16, and fp16 through the shared GradScaler)")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_adversarial_steps_on_cuda_under_autocast(amp):
    trainer = Trainer(smoke("adversarial", device="cuda", amp=amp, steps=3, eval_every=3))
    assert (trainer.scaler is not None) == (amp == "fp16")
    before = {key: value.clone() for key, value in trainer.adaptation.discriminators.state_dict().items()}
    result = trainer.fit()
    for row in result.history.steps:
        assert all(math.isfinite(value) for value in row.values()), row
    assert changed(before, trainer.adaptation.discriminators)
    assert next(trainer.adaptation.discriminators.parameters()).is_cuda
    assert result.metrics["semseg"]["pixel_acc"] >= 0


def test_discriminator_inputs_of_a_model_for_display():
    trainer = Trainer(smoke("none"))
    batch = next(trainer._batches())
    maps = discriminator_inputs(trainer.model.eval(), batch["image"], batch["depth"])
    assert maps["semseg"].shape == (2, 19, 32, 64) and maps["depth"].shape == (2, 1, 32, 64)
    assert 0 <= float(maps["semseg"].sum(dim=1).min()) <= float(maps["semseg"].sum(dim=1).max()) <= 1 + 1e-5


# --- command line ---------------------------------------------------------------------------------------

def test_train_command_adapts_to_the_toy_target(tmp_path, capsys):
    code = main(["train", "--profile", "smoke", "--tasks", "SD", "--adapt", "adversarial", "--target", "toy",
                 "--steps", "2", "--runs", str(tmp_path), "--quiet", "--device", "cpu",
                 "-p", "adapt.discriminator_width=4"])
    assert code == 0
    run_dir = tmp_path / "smoke-densemtl-SD-adversarial-s0"
    assert run_dir == default_run_dir(smoke("adversarial"), tmp_path)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["adapt"]["method"] == "adversarial" and config["data"]["target_dataset"] == "toy"
    history = json.loads((run_dir / "history.json").read_text())
    assert {"loss/adversarial", "loss/discriminator_source"} <= set(history["steps"][-1])


def test_train_command_without_a_target_says_how_to_set_one(tmp_path, capsys):
    code = main(["train", "--profile", "smoke", "--adapt", "entropy", "--runs", str(tmp_path), "--quiet"])
    assert code == 2
    assert "adapt.method='entropy' needs a target domain" in capsys.readouterr().err
