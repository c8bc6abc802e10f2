"""Tests of densemtl_lab.evaluation: `evaluate` needs no training config, and one metrics shape with its flat view."""

from __future__ import annotations

import pytest
import torch

from densemtl_lab.config import get_profile, override
from densemtl_lab.evaluation import evaluate
from densemtl_lab.metrics import flatten_metrics, nest_metrics
from densemtl_lab.train import Trainer

SMOKE = get_profile("smoke", quiet=True, device="cpu")


@pytest.fixture(scope="module")
def trainer():
    """A smoke DenseMTL on S, D and N after two training steps (in training mode, as the trainer leaves it)."""
    trained = Trainer(override(SMOKE, "model.name=densemtl", "model.tasks=SDN"))
    trained.fit(until=2)
    return trained


def test_evaluate_takes_the_model_and_the_dataset_and_agrees_with_the_trainer(trainer):
    trainer.model.train()
    metrics = evaluate(trainer.model, trainer.val_set, batch_size=SMOKE.train.batch_size, device="cpu")
    assert set(metrics) == {"semseg", "depth", "normals"}
    assert {"mIoU", "pixel_acc"} <= set(metrics["semseg"]) and "rmse" in metrics["depth"]
    assert trainer.model.training  # the model's mode is restored
    assert metrics == trainer.evaluate()  # the trainer evaluates through it, with its run's options


def test_evaluate_reads_at_most_max_batches(trainer):
    first = torch.utils.data.Subset(trainer.val_set, [0])
    first.class_ids = getattr(trainer.val_set, "class_ids", None)  # the classes the metrics count
    limited = evaluate(trainer.model, trainer.val_set, batch_size=1, max_batches=1)
    assert limited == evaluate(trainer.model, first, batch_size=1)


def test_evaluate_on_the_cpu_keeps_large_buffers_mapped_as_the_trainer_does(trainer, monkeypatch):
    calls = []
    monkeypatch.setattr("densemtl_lab.evaluation.tune_cpu_allocator", lambda: calls.append("tuned") or True)
    evaluate(trainer.model, trainer.val_set, batch_size=1, max_batches=1, device="cpu")
    assert calls == ["tuned"]


def test_the_flat_view_and_the_nested_shape_are_inverse():
    metrics = {"semseg": {"mIoU": 50.0, "pixel_acc": 90.0}, "depth": {"rmse": 4.0}, "delta_m": -1.5}
    flat = flatten_metrics(metrics)
    assert flat == {"semseg/mIoU": 50.0, "semseg/pixel_acc": 90.0, "depth/rmse": 4.0, "delta_m": -1.5}
    assert nest_metrics(flat) == metrics
    row = {"model": "mtl", "seeds": [0], **flat, "delta_m": None}  # a results row: labels and no delta_m
    assert nest_metrics(row) == {"semseg": {"mIoU": 50.0, "pixel_acc": 90.0}, "depth": {"rmse": 4.0}}
