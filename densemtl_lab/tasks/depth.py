"""Depth (D): metric depth per pixel, regressed in the reference's normalised inverse-depth coding.

- label: metres, float [B, 1, H, W], 0 where invalid;
- coding: the network regresses d = 65536 / (depth_cm + 1) (`encode_depth`); predictions are decoded
  back to metres for metrics and pictures (`decode_depth`);
- loss: BerHu on the coding (the reference, `vendor/three_ways/loss.py`), or, with kind="l1", L1 in
  metres over valid pixels; kind="photometric" (self-supervised depth, the reference's SDE setting) reads
  no label: `densemtl_lab.photometric` computes it from neighbouring frames, and the network's head is a
  sigmoid disparity (`model.depth_output=disparity`), turned into the same coding (`code_from_disparity`);
- metrics: the prediction decoded (clamped to [1e-3, 80] m), pixels with 1e-3 < z_gt < 80 m, pooled
  over the whole set: AbsRel, SqRel, RMSE, RMSE-log, delta < 1.25^k. With median scaling (self-supervised
  depth, whose scale is unknown; the reference's `metrics/depth.py`, after Monodepth2), each image's
  prediction is first multiplied by median(label) / median(prediction) over its valid pixels, then clamped. `reference_quirks=True` (its
  `metrics/*.py`): both depths converted with 655.36 / d - 1 (metres minus 0.99), the range mask
  applied to the shifted label; AbsRel, SqRel, MSE, RMSE-log, delta averaged per image; RMSE =
  sqrt(mean per-image MSE); images without a valid pixel skipped (the reference gets NaN);
- picture: magma on inverse depth (near is bright), scaled between the 2nd and 98th percentiles of
  the valid pixels of this picture; invalid depth (0) is black;
- domain discriminator: ReLU(prediction) min-max normalised with the source batch's valid ground truth,
  both in the output coding. Only valid source pixels set the range: our depth labels are 0 where
  invalid, which would encode to 65536 (the reference's labels have no such zeros).
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING, Any, Sequence

from densemtl_lab.lazy import lazy_module
from densemtl_lab.tasks.base import MetricSpec, Task, masked_mean, picture_map
from densemtl_lab.tasks.meter import Meter, MetricOptions, pool_per_image, rate, ratio

if TYPE_CHECKING:
    import numpy as np
    import torch
else:
    np, torch = lazy_module("numpy"), lazy_module("torch")

#: Depth range kept by evaluation, in metres (reference protocol: 1e-3 < z < 80 m).
MIN_DEPTH_M = 1e-3
MAX_DEPTH_M = 80.0
#: BerHu switches from L1 to the scaled L2 branch at this fraction of the batch's largest error.
BERHU_THRESHOLD = 0.2
#: The depth range of a sigmoid disparity head, in metres (the reference's SDE min_depth and max_depth).
DISPARITY_MIN_DEPTH_M = 0.1
DISPARITY_MAX_DEPTH_M = 100.0


def encode_depth(metres: torch.Tensor) -> torch.Tensor:
    """Metric depth (0 = invalid) -> the reference's normalised inverse depth (0 where invalid)."""
    valid = metres > 0
    coded = 65536.0 / (metres.clamp_min(0) * 100.0 + 1.0)
    return coded.where(valid, coded.new_zeros(()))


def decode_depth(coded: torch.Tensor, reference_quirk: bool = False) -> torch.Tensor:
    """Normalised inverse depth -> metres, clamped to the evaluation range.

    `reference_quirk=True` reproduces the reference's conversion 655.36 / d - 1, which returns
    metres minus 0.99 (its metrics are computed on these shifted depths), on the raw code: a negative
    output gives a negative depth, which the clamp then takes to 1e-3 m, as the reference's does.
    Without the quirk, codes below 1e-6 count as 1e-6 (the far end, 80 m).
    """
    if reference_quirk:
        return (655.36 / coded - 1.0).clamp(MIN_DEPTH_M, MAX_DEPTH_M)
    metres = (65536.0 / coded.clamp_min(1e-6) - 1.0) / 100.0
    return metres.clamp(MIN_DEPTH_M, MAX_DEPTH_M)


def disparity_to_depth(disparity: torch.Tensor, min_depth: float = DISPARITY_MIN_DEPTH_M,
                       max_depth: float = DISPARITY_MAX_DEPTH_M) -> torch.Tensor:
    """A sigmoid output in [0, 1] -> depth in [min_depth, max_depth] (0 -> max_depth), linear in 1/depth
    (the reference's `disp_to_depth`, vendor/monodepth2/layers.py)."""
    min_disparity, max_disparity = 1 / max_depth, 1 / min_depth
    return 1 / (min_disparity + (max_disparity - min_disparity) * disparity)


def code_from_disparity(disparity: torch.Tensor) -> torch.Tensor:
    """A disparity head's output in [0, 1] -> the depth coding every depth output uses (encode_depth's)."""
    return 65536.0 / (disparity_to_depth(disparity) * 100.0 + 1.0)


def depth_to_disparity(depth: torch.Tensor, min_depth: float = DISPARITY_MIN_DEPTH_M,
                       max_depth: float = DISPARITY_MAX_DEPTH_M) -> torch.Tensor:
    """The inverse of disparity_to_depth: the sigmoid output whose depth is `depth` (metres; in [0, 1] for
    depths in [min_depth, max_depth])."""
    min_disparity, max_disparity = 1 / max_depth, 1 / min_depth
    return (1 / depth - min_disparity) / (max_disparity - min_disparity)


def disparity_from_code(code: torch.Tensor) -> torch.Tensor:
    """The inverse of code_from_disparity: the disparity in [0, 1] of a coded output."""
    return depth_to_disparity((65536.0 / code - 1.0) / 100.0)


@cache
def _code_range() -> tuple[float, float]:
    """The codes of the far (80 m) and near (1e-3 m) ends of the evaluation range."""
    ends = encode_depth(torch.tensor([MAX_DEPTH_M, MIN_DEPTH_M], dtype=torch.float64))
    return float(ends[0]), float(ends[1])


def metres_from_code(code: torch.Tensor) -> torch.Tensor:
    """Differentiable inverse of encode_depth for training.

    The forward values equal decode_depth (clamped to the evaluation range), but the clamp is
    straight-through: out-of-range outputs get the gradient of the range end instead of none.
    """
    clamped = code + (code.clamp(*_code_range()) - code).detach()
    return (65536.0 / clamped - 1.0) / 100.0


def berhu(pred: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """BerHu on normalised inverse depth (three_ways `berhu`), mean over all pixels.

    e = |d_hat - d| * mask, c = 0.2 * max(e) over the batch (detached), per pixel e if e <= c else
    (e^2 + c^2) / 2c.
    """
    target = encode_depth(depth_m)
    error = (pred - target).abs() * (depth_m > 0)  # masked pixels count as 0 in the mean
    c = BERHU_THRESHOLD * error.detach().max()
    # Guard c == 0 (a perfect batch): the reference divides by zero there and gets NaN gradients.
    scaled_l2 = (error.square() + c.square()) / (2 * c.clamp_min(1e-12))
    return torch.where(error <= c, error, scaled_l2).mean()


def l1_metres(pred: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """Mean |metres_from_code(pred) - z| in metres over pixels with depth."""
    return masked_mean((metres_from_code(pred) - depth_m).abs(), depth_m > 0)


#: The depth losses by name, the default first.
DEPTH_LOSSES = {"berhu": berhu, "l1": l1_metres}
#: The depth losses that read no label: computed outside the task, from other inputs (densemtl_lab.losses).
LABEL_FREE_LOSSES = ("photometric",)


def normalised_depth(pred: torch.Tensor, source_depth_m: torch.Tensor) -> torch.Tensor:
    """ReLU(pred) min-max normalised with the source batch's valid ground truth, in the output coding.

    `pred` [B, 1, H, W] is the network's normalised inverse depth; `source_depth_m` [B, 1, H, W] is the
    source batch's depth label in metres (0 where invalid). The source labels themselves map to [0, 1].
    """
    valid = source_depth_m > 0
    if not bool(valid.any()):
        raise ValueError("the source batch has no valid depth pixel (all 0), so the depth discriminator "
                         "input has no range; check the source dataset's depth labels")
    codes = encode_depth(source_depth_m[valid].float())
    low, high = codes.min(), codes.max()
    return (pred.float().relu() - low) / (high - low).clamp_min(1e-6)


class Depth(Task):
    """Depth: one channel of normalised inverse depth."""

    name = "depth"
    letter = "D"
    label_key = "depth"
    channels = 1
    label_channels = 1
    metrics = (MetricSpec("abs_rel", False), MetricSpec("sq_rel", False), MetricSpec("rmse", False),
               MetricSpec("rmse_log", False), MetricSpec("delta1", True), MetricSpec("delta2", True),
               MetricSpec("delta3", True))
    main_metric = "rmse"
    title = "depth (m)"
    figure_key = "metres"
    loss_kinds = (*DEPTH_LOSSES, *LABEL_FREE_LOSSES)
    label_free_kinds = LABEL_FREE_LOSSES

    def loss(self, pred: torch.Tensor, label: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """BerHu (kind "berhu", the default) or L1 in metres ("l1") of a coded output against metres."""
        kind = self.loss_kind(kind)
        if kind in LABEL_FREE_LOSSES:
            raise ValueError(f"depth_loss={kind!r} compares frames, not labels: MultiTaskLoss computes it "
                             "(densemtl_lab.photometric); Depth.loss takes berhu or l1")
        return DEPTH_LOSSES[kind](self.prepare(pred, label), label)

    def meter(self, options: MetricOptions) -> Meter:
        return DepthMeter(options.reference_quirks, options.median_scaling)

    def decode(self, raw: torch.Tensor, reference_quirks: bool = False) -> torch.Tensor:
        """Metres [B, 1, H, W]."""
        return decode_depth(raw, reference_quirk=reference_quirks)

    def colourise(self, prediction: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Metric depth [H, W] (0 = invalid) -> magma on inverse depth; invalid pixels black."""
        from matplotlib import colormaps

        depth = picture_map(self.name, prediction, 1).astype(np.float64)
        valid = np.isfinite(depth) & (depth > 0)
        picture = np.zeros(depth.shape + (3,), dtype=np.uint8)
        if not valid.any():
            return picture
        inverse = 1.0 / depth[valid]
        low, high = np.percentile(inverse, [2, 98])
        scaled = np.clip((inverse - low) / max(high - low, 1e-12), 0.0, 1.0)
        picture[valid] = (colormaps["magma"](scaled)[:, :3] * 255.0 + 0.5).astype(np.uint8)
        return picture

    def discriminator_input(self, pred: torch.Tensor, source_label: torch.Tensor | None = None) -> torch.Tensor:
        """`normalised_depth` with the source batch's depth label."""
        if source_label is None:
            raise ValueError("the depth discriminator input needs the source batch's depth label")
        return normalised_depth(pred, source_label)

    def cache_array(self, label: torch.Tensor) -> np.ndarray:
        """float32 metres [H, W]."""
        return label[0].numpy().astype(np.float32)


DEPTH = Depth()


def median_scaled(pred: torch.Tensor, label: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Coded predictions [B, 1, H, W] in metres, each image scaled by median(label) / median(prediction)
    over its `valid` pixels (unscaled without any), then clamped to the evaluation range."""
    metres = (65536.0 / pred.float().clamp_min(1e-6) - 1.0) / 100.0
    scales = [label[i][valid[i]].median() / metres[i][valid[i]].median() if bool(valid[i].any())
              else metres.new_ones(()) for i in range(pred.shape[0])]
    return (metres * torch.stack(scales).view(-1, 1, 1, 1)).clamp(MIN_DEPTH_M, MAX_DEPTH_M)


class DepthMeter(Meter):
    """AbsRel, SqRel, RMSE, RMSE-log and delta accuracies in metres."""

    task = DEPTH
    _SUMS = ("abs_rel", "sq_rel", "sq_err", "sq_log_err", "delta1", "delta2", "delta3")

    def __init__(self, reference_quirks: bool = False, median_scaling: bool = False) -> None:
        if reference_quirks and median_scaling:
            raise ValueError("median scaling (self-supervised depth) has no reference-quirk variant; "
                             "evaluate it with reference_quirks=False")
        self.reference_quirks = reference_quirks
        self.median_scaling = median_scaling
        super().__init__()

    def _empty_stats(self) -> dict[str, torch.Tensor]:
        return {key: torch.zeros(()) for key in (*self._SUMS, "count")}

    def _batch_stats(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        # The quirk's 655.36 / encode_depth(z) - 1 equals z - 0.99.
        gt_m = label - 0.99 if self.reference_quirks else label
        valid = (label > 0) & (gt_m > MIN_DEPTH_M) & (gt_m < MAX_DEPTH_M)
        if self.median_scaling:
            pred_m = median_scaled(pred, label, valid)
        else:
            pred_m = decode_depth(pred, reference_quirk=self.reference_quirks)  # B, 1, H, W
        gt_m = torch.where(valid, gt_m, torch.ones_like(gt_m))  # keep the masked-out terms finite
        diff = pred_m - gt_m
        ratio_ = torch.maximum(pred_m / gt_m, gt_m / pred_m)
        terms = {
            "abs_rel": diff.abs() / gt_m,
            "sq_rel": diff.square() / gt_m,
            "sq_err": diff.square(),
            "sq_log_err": (pred_m.log() - gt_m.log()).square(),
            **{f"delta{k}": (ratio_ < 1.25**k).float() for k in (1, 2, 3)},
        }
        sums = {key: (term * valid).double().sum(dim=(1, 2, 3)) for key, term in terms.items()}
        return pool_per_image(sums, valid.sum(dim=(1, 2, 3)), self.reference_quirks)

    def compute(self) -> dict[str, float]:
        s = {key: float(value) for key, value in self.stats.items()}
        n = s["count"]
        return {
            "abs_rel": ratio(s["abs_rel"], n),
            "sq_rel": ratio(s["sq_rel"], n),
            "rmse": math.sqrt(ratio(s["sq_err"], n)),
            "rmse_log": math.sqrt(ratio(s["sq_log_err"], n)),
            **{f"delta{k}": rate(s[f"delta{k}"], n) for k in (1, 2, 3)},
        }
