"""Surface normals (N): a unit 3-vector per pixel.

- label: float [B, 3, H, W], all zero where invalid;
- loss: mean 1 - cos(pred, label) over valid pixels, both L2-normalised (docs/faithfulness.md);
- metrics: the angle 2 atan2(|p - g|, |p + g|) of the normalised prediction over valid pixels, pooled:
  mean, RMSE, % within 11.25/22.5/30 deg; the median from a histogram of 0.01 deg bins (exact to half
  a bin, 0.005 deg). `reference_quirks=True` (its `metrics/*.py` and `loss/normals.py`): mask ignored
  (all pixels), prediction not normalised (normalised on NYUv2, whose reference config uses the
  `gt_normals` loss: `GT_NORMALS_DATASETS`), per-image averaging (median = torch's lower median per
  image), and, as in the reference's `Normals._metrics` which receives one image [3, H, W], the vector
  norms are taken over the image rows (dim 1) instead of the channels;
- picture: (n + 1) / 2 per channel, x -> red, y -> green, z -> blue; invalid (all-zero) normals are
  mid-grey;
- domain discriminator: the L2-normalised prediction.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from densemtl_lab.lazy import lazy_module
from densemtl_lab.tasks.base import MetricSpec, Task, masked_mean, picture_map
from densemtl_lab.tasks.meter import Meter, MetricOptions, pool_per_image, rate, ratio

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    np, torch = lazy_module("numpy"), lazy_module("torch")

#: Normal-angle thresholds (degrees) of the `within_*` metrics.
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
#: Datasets whose reference config supervises normals with `loss/gt_normals.py` (normals read from
#: files): its evaluation L2-normalises the prediction first. The others use `loss/normals.py`, which does not.
GT_NORMALS_DATASETS = ("nyuv2",)


def unit_channels(vectors: torch.Tensor) -> torch.Tensor:
    """`F.normalize(vectors, dim=1)` (v / max(|v|, 1e-12)) as a channel sum and rsqrt.

    Same values to rounding, about 20x faster on the CPU: torch's vector norm over the channels of an
    NCHW tensor takes a slow strided path (6 ms for a [4, 3, 64, 128] prediction here).
    """
    return vectors * (vectors * vectors).sum(dim=1, keepdim=True).clamp_min(1e-24).rsqrt()


def unit_normals(pred: torch.Tensor) -> torch.Tensor:
    """The L2-normalised normals prediction [B, 3, H, W] (float32)."""
    return unit_channels(pred.float())


class Normals(Task):
    """Surface normals: three channels, normalised for evaluation."""

    name = "normals"
    letter = "N"
    label_key = "normals"
    channels = 3
    label_channels = 3
    metrics = (MetricSpec("mean_angle", False), MetricSpec("median_angle", False),
               MetricSpec("rmse_angle", False), MetricSpec("within_11.25", True),
               MetricSpec("within_22.5", True), MetricSpec("within_30", True))
    main_metric = "mean_angle"
    title = "surface normals"

    def loss(self, pred: torch.Tensor, label: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """Mean 1 - cos(pred, label) over valid pixels (label not all zero), both L2-normalised."""
        self.loss_kind(kind)
        pred = self.prepare(pred, label)
        cosine = (unit_channels(pred) * unit_channels(label.float())).sum(dim=1)  # B, H, W
        return masked_mean(1.0 - cosine, label.ne(0).any(dim=1))

    def meter(self, options: MetricOptions) -> Meter:
        return NormalsMeter(options.reference_quirks,
                            normalise_prediction=options.dataset in GT_NORMALS_DATASETS)

    def decode(self, raw: torch.Tensor, reference_quirks: bool = False) -> torch.Tensor:
        """Unit vectors [B, 3, H, W]."""
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-8)  # F.normalize

    def colourise(self, prediction: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Unit normals [3, H, W] -> RGB = (n + 1) / 2; the prediction is normalised first."""
        vectors = picture_map(self.name, prediction, 3).astype(np.float64)
        length = np.linalg.norm(vectors, axis=0, keepdims=True)
        unit = np.where(length > 0, vectors / np.maximum(length, 1e-12), 0.0)
        return ((unit.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)

    def discriminator_input(self, pred: torch.Tensor, source_label: torch.Tensor | None = None) -> torch.Tensor:
        """`unit_normals` of the prediction."""
        return unit_normals(pred)

    def cache_array(self, label: torch.Tensor) -> np.ndarray:
        """float32 [H, W, 3]."""
        return label.permute(1, 2, 0).numpy().astype(np.float32)


NORMALS = Normals()


def _within_key(threshold: float) -> str:
    return f"within_{threshold:g}"


def _channel_length(vectors: torch.Tensor) -> torch.Tensor:
    """|v| over dim 1 ([B, C, H, W] -> [B, H, W]); `norm(dim=1)` takes a slow strided path on the CPU."""
    return (vectors * vectors).sum(dim=1).sqrt()


class NormalsMeter(Meter):
    """Angular error statistics of surface normals in degrees.

    With `reference_quirks`, `normalise_prediction` follows the reference's loss for the dataset:
    True for `gt_normals` (NYUv2), False for the outdoor datasets' `normals` loss.
    """

    task = NORMALS

    def __init__(self, reference_quirks: bool = False, bin_width: float = 0.01,
                 normalise_prediction: bool = False) -> None:
        self.reference_quirks = reference_quirks
        self.normalise_prediction = normalise_prediction
        self.bin_width = float(bin_width)
        self.num_bins = math.ceil(180.0 / self.bin_width)
        super().__init__()

    def _empty_stats(self) -> dict[str, torch.Tensor]:
        stats = {key: torch.zeros(()) for key in ("sum", "sum_sq", "count")}
        stats.update({_within_key(t): torch.zeros(()) for t in ANGLE_THRESHOLDS})
        if self.reference_quirks:
            stats["median_sum"] = torch.zeros(())
        else:
            stats["histogram"] = torch.zeros(self.num_bins)
        return stats

    def _angles(self, pred: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel angles [B, ...] in degrees and their validity mask."""
        gt = unit_channels(label.float())
        if self.reference_quirks:
            # Reference: no mask, norms over dim 1 of one [3, H, W] image; the prediction normalised
            # only on the gt_normals path (NYUv2).
            if self.normalise_prediction:
                pred = unit_channels(pred)
            angles = 2 * torch.atan2((pred - gt).norm(dim=2), (pred + gt).norm(dim=2))  # B, 3, W
            return torch.rad2deg(angles), torch.ones_like(angles, dtype=torch.bool)
        pred = unit_channels(pred)
        angles = 2 * torch.atan2(_channel_length(pred - gt), _channel_length(pred + gt))  # B, H, W
        return torch.rad2deg(angles), label.ne(0).any(dim=1)

    def _batch_stats(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        angles, valid = self._angles(pred, label)
        flat, mask = angles.flatten(1).double(), valid.flatten(1)  # B, P
        terms = {"sum": flat, "sum_sq": flat.square()}
        terms.update({_within_key(t): (flat < t).double() for t in ANGLE_THRESHOLDS})
        sums = {key: (term * mask).sum(dim=1) for key, term in terms.items()}
        stats = pool_per_image(sums, mask.sum(dim=1), self.reference_quirks)
        if self.reference_quirks:
            stats["median_sum"] = flat.median(dim=1).values.sum()  # the mask is all ones here
        else:
            bins = (flat[mask] / self.bin_width).long().clamp(0, self.num_bins - 1)
            stats["histogram"] = torch.bincount(bins, minlength=self.num_bins)
        return stats

    def _median(self) -> float:
        if self.reference_quirks:
            return ratio(float(self.stats["median_sum"]), float(self.stats["count"]))
        cumulative = self.stats["histogram"].cumsum(0)
        total = float(cumulative[-1])
        if total == 0:
            return math.nan
        # the middle rank(s), 1-based; an even count averages the two middle values, like numpy
        ranks = {math.floor((total + 1) / 2), math.ceil((total + 1) / 2)}
        centres = [
            (int(torch.searchsorted(cumulative, torch.tensor(float(r), dtype=torch.float64))) + 0.5)
            * self.bin_width
            for r in ranks
        ]
        return sum(centres) / len(centres)

    def compute(self) -> dict[str, float]:
        s = {key: float(value) for key, value in self.stats.items() if value.dim() == 0}
        n = s["count"]
        return {
            "mean_angle": ratio(s["sum"], n),
            "median_angle": self._median(),
            "rmse_angle": math.sqrt(ratio(s["sum_sq"], n)),
            **{_within_key(t): rate(s[_within_key(t)], n) for t in ANGLE_THRESHOLDS},
        }
