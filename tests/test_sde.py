"""Self-supervised depth in training: train.depth_loss=photometric on toy sequences, end to end."""

from __future__ import annotations

import json

import pytest
import torch

from densemtl_lab.checkpoint import load_checkpoint
from densemtl_lab.cli import main
from densemtl_lab.config import ConfigError, get_profile, override
from densemtl_lab.data.fixtures import write_cityscapes
from densemtl_lab.data.toy_sequence import ToySequences
from densemtl_lab.data.transforms import crop, hflip
from densemtl_lab.metrics import MultiTaskMetrics
from densemtl_lab.models import build_model
from densemtl_lab.photometric import view_synthesis
from densemtl_lab.tasks.depth import (
    DISPARITY_MAX_DEPTH_M, DISPARITY_MIN_DEPTH_M, code_from_disparity, decode_depth, encode_depth,
)
from densemtl_lab.train import Trainer, load_trained_model

SDE = ("model.tasks=SD", "train.depth_loss=photometric", "data.sequence=true", "model.depth_output=disparity",
       "optim.pose_lr=1e-4")
SMOKE_SDE = override(get_profile("smoke", quiet=True, device="cpu"), *SDE)


@pytest.mark.parametrize(("dropped", "named"), [
    ("data.sequence=false", "data.sequence=true"),
    ("model.depth_output=code", "model.depth_output=disparity"),
    ("model.tasks=SN", "has no D"),
])
def test_a_photometric_depth_loss_names_the_setting_it_lacks(dropped, named):
    with pytest.raises(ConfigError, match=named):
        override(SMOKE_SDE, dropped)


def test_sequences_are_refused_where_no_frames_exist():
    with pytest.raises(ConfigError, match="the toy dataset and Cityscapes"):
        override(get_profile("smoke"), "data.sequence=true", "data.dataset=synthia")


@pytest.mark.parametrize("transform", [hflip, lambda sample: crop(sample, 8, 16, (48, 96))], ids=["flip", "crop"])
def test_a_flipped_or_cropped_sequence_still_warps_with_its_true_geometry(transform):
    def true_warp_error(sample, poses):
        depth = torch.where(sample["depth"] > 0, sample["depth"], torch.tensor(80.0))[None]
        return float(view_synthesis(sample["image"][None], sample["frames"][None], depth, sample["K"][None],
                                    poses[None])[1].mean())

    sample = ToySequences(2, size=(64, 128), domain="target", severity=0.25, seed=0)[0]
    changed = transform(sample)
    assert changed["frames"].shape[-2:] == changed["image"].shape[-2:]
    before, after = true_warp_error(sample, sample["poses"]), true_warp_error(changed, changed["poses"])
    assert after < 1.25 * before  # the geometry still holds (the image border differs)
    if transform is hflip:  # mirrored: the sideways drift changes sign, nothing else does
        assert torch.allclose(changed["poses"][:, 0, 3], -sample["poses"][:, 0, 3])
        assert torch.equal(changed["poses"][:, 1:, :], sample["poses"][:, 1:, :])


def test_a_disparity_head_is_the_same_network_with_its_depth_read_as_a_sigmoid_disparity():
    image = torch.rand(2, 3, 32, 64)
    outputs = {}
    for output in ("code", "disparity"):
        torch.manual_seed(0)
        model = build_model("mtl", "SD", num_classes=4, decoder_widths=(8, 8, 8, 8, 8), depth_output=output).eval()
        with torch.no_grad():
            outputs[output] = model(image)
    for scale, raw in outputs["code"]["depth"].items():
        assert torch.allclose(outputs["disparity"]["depth"][scale], code_from_disparity(torch.sigmoid(raw)))
        assert torch.equal(outputs["disparity"]["semseg"][scale], outputs["code"]["semseg"][scale])
    extremes = code_from_disparity(torch.sigmoid(torch.tensor([-60.0, 60.0])))
    assert torch.allclose((65536.0 / extremes - 1) / 100, torch.tensor([DISPARITY_MAX_DEPTH_M, DISPARITY_MIN_DEPTH_M]))


class _PoisonDepth:
    """A transform that makes every training depth label NaN: a loss that read them would be NaN."""

    def __call__(self, sample):
        sample["depth"] = torch.full_like(sample["depth"], float("nan"))
        return sample


def test_training_learns_from_frames_never_reads_a_depth_label_and_moves_the_pose_network():
    config = override(SMOKE_SDE, "train.steps=3", "train.eval_every=3")
    data = config.data
    poisoned = ToySequences(data.train_length, size=data.size, seed=data.scene_seed, split="train",
                            transform=_PoisonDepth())
    trainer = Trainer(config, train_set=poisoned)
    pose_before = [param.detach().clone() for param in trainer.criterion.label_free.parameters()]
    result = trainer.fit()
    losses = [row["loss/depth"] for row in result.history.steps]
    assert all(0 < loss < 1 for loss in losses)  # a photometric error of [0, 1] images, plus smoothness
    assert {group["name"]: group["lr"] for group in trainer.optimizer.param_groups}["pose"] == 1e-4
    moved = [not torch.equal(before, after) for before, after in
             zip(pose_before, trainer.criterion.label_free.parameters())]
    assert any(moved)
    assert 0 < result.metrics["depth"]["rmse"] < 80  # evaluated against the val labels, median-scaled


def test_known_poses_replace_the_pose_network_and_need_a_sequence_that_has_them():
    config = override(SMOKE_SDE, "model.pose_source=dataset", "train.steps=2", "train.eval_every=2")
    trainer = Trainer(config)
    assert trainer.criterion.label_free["depth"].pose is None
    assert "pose" not in {group["name"] for group in trainer.optimizer.param_groups}
    assert all(0 < row["loss/depth"] < 1 for row in trainer.fit().history.steps)
    batch = next(iter(trainer.loader))
    del batch["poses"]
    with pytest.raises(KeyError, match="model.pose_source=network"):
        trainer.criterion.label_free["depth"]({0: torch.ones(2, 1, 32, 64) * 100}, batch)


def test_a_gradient_aggregator_and_the_conflict_log_take_the_photometric_loss_like_any_other():
    config = override(SMOKE_SDE, "train.steps=2", "train.eval_every=2", "train.aggregator=upgrad",
                      "train.conflict_every=1")
    trainer = Trainer(config)
    pose_before = [param.detach().clone() for param in trainer.criterion.label_free.parameters()]
    last = trainer.fit().history.steps[-1]
    assert last["loss"] == pytest.approx(last["loss/semseg"] + last["loss/depth"], rel=1e-5)  # weights 1 and 1
    assert -1 <= last["grad_cosine/semseg~depth"] <= 1 and last["grad_norm/depth"] > 0
    assert any(not torch.equal(before, after)
               for before, after in zip(pose_before, trainer.criterion.label_free.parameters()))


def test_a_paused_photometric_run_resumes_to_the_straight_run_bit_for_bit(tmp_path):
    config = override(SMOKE_SDE, "train.steps=4", "train.eval_every=4", "train.checkpoint_every=2")
    Trainer(config, tmp_path / "straight").fit()
    Trainer(config, tmp_path / "paused").fit(until=2)
    Trainer(config, tmp_path / "paused", resume=True).fit()
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_0000004.pt")
    resumed = load_checkpoint(tmp_path / "paused" / "checkpoints" / "step_0000004.pt")
    for part in ("model", "criterion"):
        for key, value in straight[part].items():
            assert torch.equal(resumed[part][key], value), f"{part}.{key}"
    model, loaded, _ = load_trained_model(tmp_path / "straight" / "checkpoints" / "step_0000004.pt")
    assert loaded.model.depth_output == "disparity" and model.depth_output == "disparity"


def test_median_scaling_forgives_a_global_scale_and_nothing_else():
    label = torch.rand(2, 1, 16, 32) * 30 + 2
    twice = encode_depth(2 * label)
    plain, scaled = (MultiTaskMetrics(["depth"], 1, median_scaling=median) for median in (False, True))
    for metrics in (plain, scaled):
        metrics.update({"depth": twice}, {"depth": label})
    assert plain.compute()["depth"]["abs_rel"] == pytest.approx(1.0, abs=1e-3)
    assert scaled.compute()["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-4)
    noisy = MultiTaskMetrics(["depth"], 1, median_scaling=True)
    noisy.update({"depth": encode_depth(2 * label * (1 + 0.2 * torch.rand_like(label)))}, {"depth": label})
    assert 0.02 < noisy.compute()["depth"]["abs_rel"] < 0.2
    assert torch.allclose(decode_depth(twice), (2 * label).clamp(max=80), rtol=1e-4)


def test_cityscapes_sequences_train_the_photometric_depth_with_the_pose_network(tmp_path):
    write_cityscapes(tmp_path, counts={"train": 2, "val": 1}, sequences=True)
    config = override(SMOKE_SDE, "data.dataset=cityscapes", f"data.root={tmp_path}", "data.classes=19",
                      "train.steps=2", "train.eval_every=2", "train.batch_size=2")
    trainer = Trainer(config)
    assert trainer.train_set.sequence and not trainer.val_set.sequence  # validation reads single frames
    result = trainer.fit()
    assert all(0 < row["loss/depth"] < 1 for row in result.history.steps)
    assert 0 < result.metrics["depth"]["rmse"] < 80


# The reference's SDE profile on the Cityscapes fixture: its settings, at a fixture's size, from scratch (no
# download in CI: model.weights and model.pose_weights null).
PAPER_SDE_ON_A_FIXTURE = ("-p", "train.steps=2", "-p", "train.eval_every=2", "-p", "train.checkpoint_every=2",
                          "-p", "data.size=[64, 128]", "-p", "data.crop=[64, 64]", "-p", "data.num_workers=0",
                          "-p", "model.weights=null", "-p", "model.pose_weights=null", "-p", "train.quiet=true")


def test_the_paper_sde_profile_trains_on_the_cityscapes_fixture_and_names_a_missing_frame(tmp_path, capsys):
    write_cityscapes(tmp_path / "cityscapes", counts={"train": 2, "val": 1}, sequences=True)
    command = ["train", "--profile", "paper-cityscapes-sde", "--data-root", str(tmp_path / "cityscapes"),
               "--device", "cpu", *PAPER_SDE_ON_A_FIXTURE]
    assert main([*command, "--run-dir", str(tmp_path / "run")]) == 0
    history = json.loads((tmp_path / "run" / "history.json").read_text())["steps"]
    assert [row["step"] for row in history] == [1, 2] and all(0 < row["loss/depth"] < 1 for row in history)
    assert {"lr/pose": 1e-6}.items() <= history[-1].items()
    capsys.readouterr()
    (tmp_path / "cityscapes" / "leftImg8bit_sequence" / "train" / "aachen" / "aachen_000001_000020_leftImg8bit.png").unlink()
    assert main([*command, "--run-dir", str(tmp_path / "again")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "aachen_000001_000020_leftImg8bit.png is missing" in error[0]
