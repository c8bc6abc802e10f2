"""The streaming meter every task's metrics implement (docs/faithfulness.md, "Metrics").

A meter accumulates sufficient statistics (float64 sums and counts on the CPU), never averages of
batch averages, so `compute()` gives the same value however the set is split into batches, and two
meters (or ranks: all-reduce `state_tensors()` with SUM) merge exactly. Predictions are raw head
outputs; they are resized to the label size like the losses.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

from densemtl_lab.lazy import lazy_module
from densemtl_lab.tasks.base import Task, resize_to_label

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")


class NonFinitePredictionError(ValueError):
    """A prediction handed to a metric holds NaN or inf."""


@dataclass(frozen=True)
class MetricOptions:
    """Settings of a multi-task evaluation; each task's meter takes those it needs."""

    num_classes: int
    class_ids: tuple[int, ...] | None = None
    reference_quirks: bool = False
    ods_tolerance: float | None = None  # None: the edges meter's default
    dataset: str | None = None  # the dataset evaluated, for the quirks that depend on it
    median_scaling: bool = False  # depth: scale each image's prediction to its label's median (self-supervised)


def rate(numerator: float, denominator: float) -> float:
    """100 * numerator / denominator, NaN when nothing was counted."""
    return 100.0 * numerator / denominator if denominator > 0 else math.nan


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when nothing was counted."""
    return numerator / denominator if denominator > 0 else math.nan


def pool_per_image(
    sums: Mapping[str, torch.Tensor], counts: torch.Tensor, per_image: bool
) -> dict[str, torch.Tensor]:
    """Per-image sums [B] -> set-level sums, plus the count they are averaged by.

    Pooled: the pixel sums and the pixel count. Per image (reference quirk): each image's mean, summed,
    and the number of images that had a valid pixel.
    """
    if not per_image:
        return {**{k: v.sum() for k, v in sums.items()}, "count": counts.sum()}
    seen = counts > 0
    means = {k: (v[seen] / counts[seen]).sum() for k, v in sums.items()}
    return {**means, "count": seen.sum()}


class Meter(ABC):
    """A streaming metric of one task: `update`, `compute`, `reset`, `merge` and `state_tensors`."""

    task: Task

    def __init__(self) -> None:
        self.stats: dict[str, torch.Tensor] = {}
        self.reset()

    @abstractmethod
    def _empty_stats(self) -> dict[str, torch.Tensor]:
        """Zeroed sufficient statistics."""

    @abstractmethod
    def _batch_stats(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sufficient statistics of one batch (pred already resized to the label, float32)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The task's metrics (names as in its `metrics`) over everything seen."""

    def reset(self) -> None:
        """Forget everything seen."""
        self.stats = {k: v.to(torch.float64) for k, v in self._empty_stats().items()}

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Accumulate one batch: raw head output [B, C, h, w] and its data-contract label."""
        self.task.check_label(label)
        self.task.check_prediction(pred, label)
        pred = pred.detach()
        if not torch.isfinite(pred).all():
            raise NonFinitePredictionError(
                f"prediction for task {self.task.name!r} holds NaN or inf; the model diverged (check the "
                f"training loss) or its input has NaN"
            )
        pred = resize_to_label(pred.float(), label)
        for key, value in self._batch_stats(pred, label.detach()).items():
            self.stats[key] += value.detach().to("cpu", torch.float64)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The live statistics: all are sums, so all-reducing each with SUM merges ranks in place."""
        return self.stats

    def merge(self, other: Meter) -> None:
        """Add another meter's statistics (same class and settings) to this one."""
        shapes = {k: v.shape for k, v in self.stats.items()}
        if type(other) is not type(self) or shapes != {k: v.shape for k, v in other.stats.items()}:
            raise ValueError(
                f"cannot merge {type(other).__name__} into {type(self).__name__}: build both meters "
                f"with the same class and settings"
            )
        for key, value in other.stats.items():
            self.stats[key] += value

