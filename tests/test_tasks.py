"""The task registry (densemtl_lab.tasks): task sets, registering a task, and a fifth task defined here alone.

`Upness` is made up for this file: how much each surface faces up, -n_y of the normals label (the
camera's y axis points down), a one-channel regression in [-1, 1]. Registered, it trains, evaluates
and colours through the public API with no change to the package.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, default_collate

from densemtl_lab.config import get_profile
from densemtl_lab.data.build import build_dataset
from densemtl_lab.data.toy import ToyScenes
from densemtl_lab.losses import MultiTaskLoss
from densemtl_lab.tasks import (
    TASK_ORDER, TASKS, MetricSpec, Task, UnknownTaskError, decode_prediction, default_weights, parse_tasks,
    register_task, task_letters, unregister_task,
)
from densemtl_lab.tasks.base import picture_map
from densemtl_lab.tasks.meter import Meter, MetricOptions
from densemtl_lab.train import Trainer
from densemtl_lab.viz import colourise, figures


class Upness(Task):
    """-n_y of the normals: 1 on the ground, 0 on walls, regressed through a tanh."""

    name = "upness"
    letter = "U"
    label_key = "upness"
    channels = 1
    label_channels = 1
    metrics = (MetricSpec("mae", False), MetricSpec("rmse", False))
    main_metric = "mae"
    title = "upness"

    def loss(self, pred: torch.Tensor, label: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        self.loss_kind(kind)
        return (self.decode(self.prepare(pred, label)) - label).abs().mean()

    def meter(self, options: MetricOptions) -> Meter:
        return UpnessMeter()

    def decode(self, raw: torch.Tensor, reference_quirks: bool = False) -> torch.Tensor:
        return raw.tanh()

    def colourise(self, prediction: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        grey = ((picture_map(self.name, prediction, 1).clip(-1.0, 1.0) + 1.0) * 127.5 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)

    def discriminator_input(self, pred: torch.Tensor, source_label: torch.Tensor | None = None) -> torch.Tensor:
        return pred.tanh()

    def cache_array(self, label: torch.Tensor) -> np.ndarray:
        return label[0].numpy().astype(np.float32)


UPNESS = Upness()


class UpnessMeter(Meter):
    """Mean absolute error and RMSE over all pixels."""

    task = UPNESS

    def _empty_stats(self) -> dict[str, torch.Tensor]:
        return {key: torch.zeros(()) for key in ("abs", "sq", "count")}

    def _batch_stats(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        error = UPNESS.decode(pred) - label
        return {"abs": error.abs().sum(), "sq": error.square().sum(), "count": torch.tensor(float(label.numel()))}

    def compute(self) -> dict[str, float]:
        count = float(self.stats["count"])
        return {"mae": float(self.stats["abs"]) / count, "rmse": math.sqrt(float(self.stats["sq"]) / count)}


class WithUpness(Dataset):
    """Toy scenes whose samples also carry the upness label, derived from their normals."""

    num_classes = ToyScenes.num_classes
    class_ids = ToyScenes.class_ids

    def __init__(self, scenes: Dataset) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.scenes[index])
        sample["upness"] = -sample["normals"][1:2]  # 1, H, W
        return sample


@pytest.fixture
def upness():
    register_task(UPNESS)
    yield UPNESS
    unregister_task("upness")


# --- task sets ----------------------------------------------------------------------------------------

def test_the_built_in_tasks_in_canonical_order():
    assert TASK_ORDER == tuple(TASKS) == ("semseg", "depth", "normals", "edges")
    assert [task.letter for task in TASKS.values()] == ["S", "D", "N", "E"]
    assert parse_tasks("ND") == parse_tasks("depth,normals") == parse_tasks(["normals", "depth"])
    assert parse_tasks("ND") == ("depth", "normals")
    assert task_letters(["edges", "semseg"]) == "SE"


@pytest.mark.parametrize("spec, message", [
    ("SX", "unknown task 'X'"), ("SS", "named twice"), ("", "names no task"), ("semseg,albedo", "'albedo'"),
])
def test_bad_task_sets_are_named(spec, message):
    with pytest.raises(UnknownTaskError, match=message):
        parse_tasks(spec)


def test_default_weights_are_the_reference_ones():
    assert default_weights("SD") == {"semseg": 50.0, "depth": 1.0}
    assert default_weights("DN") == {"depth": 1.0, "normals": 100.0}
    assert default_weights("E") == {"edges": 1.0}


def test_each_task_names_its_main_metric_among_its_metrics():
    for task in TASKS.values():
        assert task.direction(task.main_metric) in (1, -1)
        assert {spec.name for spec in task.metrics} >= {task.main_metric}


# --- registering a task -------------------------------------------------------------------------------

def test_a_registered_task_joins_the_task_sets_after_the_built_in_ones(upness):
    assert parse_tasks("US") == ("semseg", "upness") and task_letters(["upness", "depth"]) == "DU"
    assert TASK_ORDER == ("semseg", "depth", "normals", "edges")  # the labels the datasets produce
    assert default_weights("SDU") == {"semseg": 50.0, "depth": 1.0, "upness": 1.0}


def test_unregistering_forgets_the_task():
    register_task(UPNESS)
    unregister_task("upness")
    assert "upness" not in TASKS
    with pytest.raises(UnknownTaskError, match="unknown task 'U'"):
        parse_tasks("SU")


@pytest.mark.parametrize("name, letter, message", [
    ("semseg", "Q", "named 'semseg' is registered already"),
    ("albedo", "D", "letter 'D' of task 'albedo' is taken by task 'depth'"),
    ("Albedo", "Q", "lower-case identifier"),
    ("albedo", "q", "one capital letter"),
])
def test_registering_refuses_a_name_or_letter_that_is_taken_or_malformed(name, letter, message):
    clash = type("Clash", (Upness,), {"name": name, "letter": letter})()
    with pytest.raises(ValueError, match=message):
        register_task(clash)


def test_registering_names_the_attributes_a_task_forgot():
    members = {key: value for key, value in vars(Upness).items() if key != "title" and not key.startswith("__")}
    untitled = type("Untitled", (Task,), members)()
    with pytest.raises(ValueError, match="Untitled does not set title"):
        register_task(untitled)


def test_built_in_tasks_cannot_be_unregistered():
    with pytest.raises(ValueError, match="built-in"):
        unregister_task("depth")


def test_a_fifth_task_trains_evaluates_and_colours_through_the_public_api(upness):
    config = get_profile("smoke", quiet=True, device="cpu", tasks="SU")
    train_set = WithUpness(build_dataset(config.data, "train"))
    val_set = WithUpness(build_dataset(config.data, "val"))
    result = Trainer(config, train_set=train_set, val_set=val_set).fit()

    assert config.model.task_names == ("semseg", "upness")
    assert all(math.isfinite(row["loss/upness"]) for row in result.history.steps)
    assert set(result.metrics) == {"semseg", "upness"}
    assert 0.0 <= result.metrics["upness"]["mae"] <= result.metrics["upness"]["rmse"] <= 2.0

    batch = default_collate([val_set[0], val_set[1]])
    with torch.no_grad():
        outputs = result.model.eval()(batch["image"])
    _, parts = MultiTaskLoss("SU")(outputs, batch)
    assert set(parts) == {"semseg", "upness"}
    picture = colourise("upness", decode_prediction("upness", outputs["upness"][0])[0])
    assert picture.dtype == np.uint8 and picture.shape == (*config.data.size, 3)
    figure = figures.show_predictions(batch, outputs, max_images=1)
    assert "upness" in [ax.get_title() for ax in figure.axes]
