"""Edges (E): semantic boundaries as a two-class (background, edge) prediction.

- label: float [B, 1, H, W], 1 on edge pixels;
- loss: 2-class softmax cross-entropy with class weights 0.05 (background) / 0.95 (edge), the
  reference's pos_weight=0.95;
- metrics: `f1` = F1 of the edge class from the argmax; `mean_f1` = mean of background and edge F1 (the
  reference's "F1"); `ods_f` = ODS F-measure over 99 thresholds of the edge probability with a match
  tolerance of `ods_tolerance` x image diagonal (0.0075, BSDS/SEISM's maxDist). Counts are pooled over
  the dataset per threshold. The one-to-one bipartite matching of BSDS is approximated by a dilation
  test: a predicted edge pixel is correct if a label edge lies within the tolerance disk, and a label
  edge pixel is recalled if a predicted edge lies within it. No thinning (non-maximum suppression) is
  applied to the predictions, so scores are not comparable with SEISM's to the decimal.
  `reference_quirks=True`: `f1` reports the two-class mean F1;
- prediction: the edge probability; picture: grey levels (edges white);
- domain discriminator: the self-information, like semseg (an extension: the reference adapts S, D
  and N only).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from densemtl_lab.lazy import lazy_module
from densemtl_lab.tasks.base import MetricSpec, Task, picture_map, self_information
from densemtl_lab.tasks.meter import Meter, MetricOptions, ratio

if TYPE_CHECKING:
    import cv2
    import numpy as np
    import torch
    import torch.nn.functional as F
else:
    cv2, np = lazy_module("cv2"), lazy_module("numpy")
    torch, F = lazy_module("torch"), lazy_module("torch.nn.functional")

#: Edge cross-entropy class weights (background, edge): the reference's pos_weight=0.95.
EDGE_CLASS_WEIGHTS = (0.05, 0.95)
#: The default ODS matching tolerance, as a fraction of the image diagonal (BSDS/SEISM maxDist).
ODS_TOLERANCE = 0.0075


class Edges(Task):
    """Edges: two logits per pixel (background, edge)."""

    name = "edges"
    letter = "E"
    label_key = "edges"
    channels = 2
    label_channels = 1
    metrics = (MetricSpec("f1", True), MetricSpec("mean_f1", True), MetricSpec("ods_f", True))
    main_metric = "f1"
    title = "edges"

    def loss(self, pred: torch.Tensor, label: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Class-weighted 2-class softmax cross-entropy (weights 0.05 / 0.95; torch's weighted mean)."""
        self.loss_kind(kind)
        logits = self.prepare(pred, label)
        weight = torch.tensor(EDGE_CLASS_WEIGHTS, dtype=logits.dtype, device=logits.device)
        return F.cross_entropy(logits, (label[:, 0] > 0.5).long(), weight=weight)

    def meter(self, options: MetricOptions) -> Meter:
        tolerance = ODS_TOLERANCE if options.ods_tolerance is None else options.ods_tolerance
        return EdgesMeter(options.reference_quirks, tolerance)

    def decode(self, raw: torch.Tensor, reference_quirks: bool = False) -> torch.Tensor:
        """Edge probability [B, 1, H, W]."""
        return raw.softmax(dim=1)[:, 1:2]

    def colourise(self, prediction: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Edge probability or label [H, W] in [0, 1] -> grey levels (edges white)."""
        grey = (picture_map(self.name, prediction, 1).astype(np.float64).clip(0.0, 1.0) * 255.0 + 0.5)
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)

    def discriminator_input(self, pred: torch.Tensor, source_label: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted self-information of the two-class softmax."""
        return self_information(pred)

    def cache_array(self, label: torch.Tensor) -> np.ndarray:
        """uint8 [H, W]."""
        return label[0].numpy().astype(np.uint8)


EDGES = Edges()


def _disk(radius: float) -> np.ndarray:
    """uint8 structuring element of the pixels within `radius` of the centre."""
    reach = int(math.floor(radius))
    offsets = np.arange(-reach, reach + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def _count_at_least(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """[num_levels] counts of entries >= k for k = 1..num_levels (levels in 0..num_levels)."""
    counts = torch.bincount(levels.flatten(), minlength=num_levels + 1)
    return counts.flip(0).cumsum(0).flip(0)[1:]


class EdgesMeter(Meter):
    """Edge F1 (argmax), two-class mean F1 and the tolerance-matched ODS F-measure."""

    task = EDGES

    def __init__(
        self, reference_quirks: bool = False, ods_tolerance: float = ODS_TOLERANCE,
        num_thresholds: int = 99,
    ) -> None:
        if not ods_tolerance >= 0:
            raise ValueError(f"ods_tolerance={ods_tolerance!r} must be >= 0 (a fraction of the diagonal)")
        self.reference_quirks = reference_quirks
        self.ods_tolerance = float(ods_tolerance)
        self.thresholds = torch.arange(1, num_thresholds + 1, dtype=torch.float64) / (num_thresholds + 1)
        super().__init__()

    def _empty_stats(self) -> dict[str, torch.Tensor]:
        levels = len(self.thresholds)
        return {
            "confusion": torch.zeros(2, 2),
            "pred_total": torch.zeros(levels),
            "pred_matched": torch.zeros(levels),
            "gt_matched": torch.zeros(levels),
            "gt_total": torch.zeros(()),
        }

    def _batch_stats(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        gt = label[:, 0] > 0.5  # B, H, W
        decision = pred.argmax(dim=1)  # B, H, W
        confusion = torch.bincount(gt.long().flatten() * 2 + decision.flatten(), minlength=4)
        prob = pred.softmax(dim=1)[:, 1].cpu()  # B, H, W, edge probability
        gt = gt.cpu()
        kernel = _disk(self.ods_tolerance * math.hypot(*gt.shape[-2:]))
        gt_near = torch.stack([
            torch.from_numpy(cv2.dilate(g.numpy().astype(np.uint8), kernel)) > 0 for g in gt
        ])
        prob_near = torch.stack([torch.from_numpy(cv2.dilate(p.numpy(), kernel)) for p in prob])
        levels = len(self.thresholds)
        level = torch.bucketize(prob.double(), self.thresholds, right=True)  # thresholds <= prob
        level_near = torch.bucketize(prob_near.double(), self.thresholds, right=True)
        return {
            "confusion": confusion.reshape(2, 2),
            "pred_total": _count_at_least(level, levels),
            "pred_matched": _count_at_least(level[gt_near], levels),
            "gt_matched": _count_at_least(level_near[gt], levels),
            "gt_total": gt.sum(),
        }

    def _f1_per_class(self) -> list[float]:
        confusion = self.stats["confusion"]
        hits = confusion.diagonal()
        sizes = confusion.sum(dim=0) + confusion.sum(dim=1)
        return [ratio(2 * float(h), float(s)) for h, s in zip(hits, sizes)]

    def _ods_f(self) -> float:
        s = self.stats
        precision = s["pred_matched"] / s["pred_total"].clamp_min(1)  # BSDS: P = 0 when nothing is predicted
        recall = s["gt_matched"] / s["gt_total"].clamp_min(1)
        f = 2 * precision * recall / (precision + recall).clamp_min(1e-300)
        return 100.0 * float(f.max()) if float(s["gt_total"]) > 0 else math.nan

    def compute(self) -> dict[str, float]:
        f1_per_class = self._f1_per_class()
        seen = [f for f in f1_per_class if not math.isnan(f)]
        mean_f1 = 100.0 * sum(seen) / len(seen) if seen else math.nan
        return {
            "f1": mean_f1 if self.reference_quirks else 100.0 * f1_per_class[1],
            "mean_f1": mean_f1,
            "ods_f": self._ods_f(),
        }
