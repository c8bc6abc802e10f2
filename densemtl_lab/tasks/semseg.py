"""Semantic segmentation (S): one class id per pixel.

- label: int64 class ids [B, H, W]; the project ignore index (`IGNORE_INDEX`, the reference's value)
  marks pixels without a class;
- loss: cross-entropy over the non-ignored pixels (the reference's `loss/semseg.py`);
- metrics: mIoU from a confusion matrix over non-ignored pixels, the nanmean of per-class IoU (a class
  absent from both label and prediction has no IoU and is skipped, as in the reference), optionally
  over `class_ids` only; pixel accuracy over all non-ignored pixels;
- prediction: the argmax class; picture: a palette lookup (Cityscapes colours by default), the ignore
  index black;
- domain discriminator: the weighted self-information of the softmax (ADVENT).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from densemtl_lab.lazy import lazy_module
from densemtl_lab.tasks.base import (
    LabelError, MetricSpec, PredictionError, Task, masked_mean, picture_map, self_information,
)
from densemtl_lab.tasks.meter import Meter, MetricOptions, rate, ratio

if TYPE_CHECKING:
    import numpy as np
    import torch
    import torch.nn.functional as F
else:
    np, torch, F = lazy_module("numpy"), lazy_module("torch"), lazy_module("torch.nn.functional")

#: Project-wide ignore index for semantic labels (the reference code's value, configurable there).
IGNORE_INDEX = 250


class Semseg(Task):
    """Semantic segmentation: logits over the dataset's classes."""

    name = "semseg"
    letter = "S"
    label_key = "semseg"
    channels = None
    label_channels = None
    metrics = (MetricSpec("mIoU", True), MetricSpec("pixel_acc", True))
    main_metric = "mIoU"
    title = "semantic segmentation"
    figure_key = "legend"

    def loss(self, pred: torch.Tensor, label: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Cross-entropy of logits [B, C, h, w] against int64 labels [B, H, W], ignoring IGNORE_INDEX."""
        self.loss_kind(kind)
        logits = self.prepare(pred, label)
        per_pixel = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")  # B, H, W
        return masked_mean(per_pixel, label != IGNORE_INDEX)

    def meter(self, options: MetricOptions) -> Meter:
        return SemsegMeter(options.num_classes, options.class_ids)

    def decode(self, raw: torch.Tensor, reference_quirks: bool = False) -> torch.Tensor:
        """Class ids [B, H, W]."""
        return raw.argmax(dim=1)

    def colourise(self, prediction: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Class ids [H, W] -> RGB; ids outside the palette (the ignore index) are black."""
        from densemtl_lab.data.classes import default_palette  # data imports the registry: not at load

        ids = picture_map(self.name, prediction, 1).astype(np.int64)
        valid_ids = ids[(ids >= 0) & (ids != IGNORE_INDEX)]
        if palette is None:
            palette = default_palette(int(valid_ids.max()) + 1 if valid_ids.size else 1)
        table = np.zeros((len(palette) + 1, 3), dtype=np.uint8)  # the last row is black
        table[:-1] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        lookup = np.where((ids >= 0) & (ids < len(palette)), ids, len(palette))
        return table[lookup]

    def discriminator_input(self, pred: torch.Tensor, source_label: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted self-information of the class probabilities, C channels summing to the entropy."""
        return self_information(pred)

    def cache_array(self, label: torch.Tensor) -> np.ndarray:
        """uint8 [H, W]: ids < 256 (ignore = 250)."""
        return label.numpy().astype(np.uint8)


SEMSEG = Semseg()


class SemsegMeter(Meter):
    """mIoU and pixel accuracy from a confusion matrix (rows: label, columns: prediction)."""

    task = SEMSEG

    def __init__(self, num_classes: int, class_ids: Iterable[int] | None = None) -> None:
        self.num_classes = int(num_classes)
        self.class_ids = tuple(range(self.num_classes)) if class_ids is None else tuple(class_ids)
        if not self.class_ids or any(not 0 <= c < self.num_classes for c in self.class_ids):
            raise ValueError(
                f"class_ids={self.class_ids} must be non-empty ids in [0, {self.num_classes}) "
                f"(num_classes={self.num_classes})"
            )
        super().__init__()

    def _empty_stats(self) -> dict[str, torch.Tensor]:
        return {"confusion": torch.zeros(self.num_classes, self.num_classes)}

    def _batch_stats(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        if pred.shape[1] != self.num_classes:
            raise PredictionError(
                f"prediction for 'semseg' has {pred.shape[1]} channels but num_classes="
                f"{self.num_classes}; build the meter with the model's num_classes"
            )
        valid = label != IGNORE_INDEX
        gt = label[valid]
        out_of_range = (gt < 0) | (gt >= self.num_classes)
        if out_of_range.any():
            raise LabelError(
                f"label 'semseg' holds class id {int(gt[out_of_range][0])} outside [0, "
                f"{self.num_classes}) and not the ignore index {IGNORE_INDEX}; fix the dataset's "
                f"label map or num_classes"
            )
        index = gt * self.num_classes + pred.argmax(dim=1)[valid]
        counts = torch.bincount(index, minlength=self.num_classes**2)
        return {"confusion": counts.reshape(self.num_classes, self.num_classes)}

    def per_class_iou(self) -> list[float]:
        """IoU of every class in [0, 1], NaN for classes absent from both label and prediction."""
        confusion = self.stats["confusion"]
        hits = confusion.diagonal()
        union = confusion.sum(dim=0) + confusion.sum(dim=1) - hits
        return [ratio(float(h), float(u)) for h, u in zip(hits, union)]

    def compute(self) -> dict[str, float]:
        ious = [self.per_class_iou()[c] for c in self.class_ids]
        seen = [iou for iou in ious if not math.isnan(iou)]
        confusion = self.stats["confusion"]
        return {
            "mIoU": 100.0 * sum(seen) / len(seen) if seen else math.nan,
            "pixel_acc": rate(float(confusion.trace()), float(confusion.sum())),
        }
