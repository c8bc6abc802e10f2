"""Checkpoints: atomic save, safe and strict load, RNG capture, keep-last and keep-best."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from densemtl_lab.checkpoint import (
    CheckpointError, CheckpointManager, ModelMismatchError, capture_rng, load_checkpoint, load_model_state,
    metric_direction, restore_rng, save_checkpoint,
)


def _state(step: int = 3, **extra) -> dict:
    return {"format": 1, "step": step, "tasks": ["semseg", "depth"], "config": {"train": {"steps": 9}},
            "model": {"weight": torch.arange(6.0).reshape(2, 3)}, **extra}


def test_save_then_load_round_trips_tensors_and_containers(tmp_path):
    path = save_checkpoint(_state(extra={"nested": [1, 2.5, None, "x", (3, 4)]}), tmp_path / "c.pt")
    state = load_checkpoint(path)
    assert torch.equal(state["model"]["weight"], torch.arange(6.0).reshape(2, 3))
    assert state["extra"]["nested"] == [1, 2.5, None, "x", (3, 4)]
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    path = save_checkpoint(_state(step=1), tmp_path / "c.pt")
    with pytest.raises(Exception):
        save_checkpoint(_state(step=2, bad=lambda: 0), path)  # a lambda cannot be pickled
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_or_truncated_files_raise_one_line_naming_the_file(tmp_path, damage):
    path = save_checkpoint(_state(), tmp_path / "c.pt")
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a checkpoint at all" * 10, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is corrupt or truncated") as caught:
        load_checkpoint(path)
    _assert_safe_one_line(str(caught.value))


def _assert_safe_one_line(message: str) -> None:
    """One plain line that never passes on torch's advice to retry with the unsafe loader."""
    assert "\n" not in message and "\x1b" not in message
    for advice in ("weights_only", "still be loaded", "trust", "allowlist", "safe_globals"):
        assert advice not in message, message


def test_objects_other_than_tensors_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**_state(), "payload": random.Random(0)}, path)  # needs a pickled class to load
    with pytest.raises(CheckpointError, match=r"evil.pt holds a Python object \(random.Random\) that a "
                                              r"weights-only load refuses.*from a densemtl-lab run") as caught:
        load_checkpoint(path)
    _assert_safe_one_line(str(caught.value))


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a densemtl-lab checkpoint \\(no format, step, tasks"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({**_state(), "format": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 99, newer"):
        load_checkpoint(tmp_path / "future.pt")


def test_model_mismatch_lists_missing_unexpected_and_shape_keys():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    state = model.state_dict()
    state.pop("1.bias")
    state["0.weight"] = torch.zeros(5, 3)
    state["2.weight"] = torch.zeros(1)
    with pytest.raises(ModelMismatchError) as caught:
        load_model_state(model, state, source="checkpoint x.pt")
    error = caught.value
    assert (error.missing, error.unexpected) == (["1.bias"], ["2.weight"])
    assert error.mismatched == ["0.weight (5, 3) vs model (4, 3)"]
    assert str(error).startswith("checkpoint x.pt does not fit the model: missing keys (1): 1.bias; "
                                 "unexpected keys (1): 2.weight; shape mismatches (1): 0.weight")


def test_matching_state_loads_exactly():
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    load_model_state(target, source.state_dict())
    assert torch.equal(target.weight, source.weight)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(_state(rng=capture_rng()), tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    restore_rng(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(2), expected[2])


@pytest.mark.parametrize("metric, direction", [
    ("semseg/mIoU", 1), ("depth/rmse", -1), ("normals/within_30", 1), ("edges/f1", 1), ("delta_m", 1)])
def test_metric_direction_comes_from_the_task_registry(metric, direction):
    assert metric_direction(metric) == direction


def test_metric_direction_of_unknown_names():
    with pytest.raises(CheckpointError, match="'task/metric'"):
        metric_direction("mIoU")
    with pytest.raises(KeyError, match="no metric 'iou'"):
        metric_direction("semseg/iou")


def test_manager_keeps_the_last_n_and_cleans_leftover_temporaries(tmp_path):
    (tmp_path / ".step_0000009.pt.abc.tmp").write_bytes(b"half")
    manager = CheckpointManager(tmp_path, keep_last=2)
    assert not list(tmp_path.glob(".*.tmp"))
    for step in (2, 4, 10):
        manager.save(_state(step=step), step)
    assert [p.name for p in manager.step_paths()] == ["step_0000004.pt", "step_0000010.pt"]
    assert manager.latest().name == "step_0000010.pt"
    assert CheckpointManager(tmp_path / "new").latest() is None


@pytest.mark.parametrize("metric, values, best", [
    ("semseg/mIoU", [0.2, 0.5, 0.4], 0.5),
    ("depth/rmse", [3.0, 2.0, 2.5], 2.0),
    ("depth/rmse", [float("nan"), 2.0, float("nan")], 2.0),
])
def test_manager_keeps_the_best_by_the_metric_direction(tmp_path, metric, values, best):
    manager = CheckpointManager(tmp_path, best_metric=metric)
    for step, value in enumerate(values, start=1):
        if manager.is_better(value):
            manager.save_best(_state(step=step), value, step)
    record = manager.best_record()
    assert record["value"] == best and record["metric"] == metric
    assert load_checkpoint(manager.best_path)["step"] == record["step"] == values.index(best) + 1
    assert json.loads((tmp_path / "best.json").read_text()) == record


def test_best_json_is_rewritten_from_best_pt_after_a_kill_between_the_two_writes(tmp_path, monkeypatch):
    from densemtl_lab import checkpoint

    manager = CheckpointManager(tmp_path, best_metric="semseg/mIoU")
    manager.save_best(_state(step=2), 40.0, 2)
    monkeypatch.setattr(checkpoint, "write_json_atomic", _killed)
    with pytest.raises(KeyboardInterrupt):
        manager.save_best(_state(step=4), 55.0, 4)  # best.pt written, best.json not yet
    monkeypatch.undo()
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 2  # the two disagree on disk
    reopened = CheckpointManager(tmp_path, best_metric="semseg/mIoU")  # as a resumed run opens it
    assert reopened.best_record() == {"metric": "semseg/mIoU", "value": 55.0, "step": 4}
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 4


def _killed(*_: object) -> None:
    raise KeyboardInterrupt
