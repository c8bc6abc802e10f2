"""Streaming per-task metrics and delta_m against stored single-task baselines (docs/faithfulness.md, "Metrics").

Each meter accumulates sufficient statistics (float64 sums and counts on the CPU), never averages
of batch averages, so `compute()` gives the same value however the set is split into batches, and
two meters (or ranks: all-reduce `state_tensors()` with SUM) merge exactly. Predictions are the raw
scale-0 head outputs; they are resized to the label size like the losses. Rates are in percent
(mIoU, pixel_acc, delta1-3, within_*, f1, mean_f1, ods_f); depth is in metres, angles in degrees.

Standard definitions (the default):
- semseg: confusion matrix over non-ignored pixels; mIoU = nanmean of per-class IoU (a class absent
  from both label and prediction has no IoU and is skipped, as in the reference), optionally over
  `class_ids` only; pixel accuracy over all non-ignored pixels.
- depth: prediction decoded with tasks.decode_depth (clamped to [1e-3, 80] m), pixels with
  1e-3 < z_gt < 80 m, pooled over the whole set: AbsRel, SqRel, RMSE, RMSE-log, delta < 1.25^k.
- normals: angle 2 atan2(|p - g|, |p + g|) of the normalised prediction over valid pixels (label
  not all zero), pooled: mean, RMSE, % within 11.25/22.5/30 deg. The median comes from a histogram
  of 0.01 deg bins (exact to half a bin, 0.005 deg).
- edges: `f1` = F1 of the edge class from the argmax; `mean_f1` = mean of background and edge F1 (the
  reference's "F1"); `ods_f` = ODS F-measure over 99 thresholds of the edge probability with a match
  tolerance of `ods_tolerance` x image diagonal (0.0075, BSDS/SEISM's maxDist). Counts are pooled over
  the dataset per threshold. The one-to-one bipartite matching of BSDS is approximated by a dilation
  test: a predicted edge pixel is correct if a label edge lies within the tolerance disk, and a label
  edge pixel is recalled if a predicted edge lies within it. No thinning (non-maximum suppression)
  is applied to the predictions, so scores are not comparable with SEISM's to the decimal.

`reference_quirks=True` reproduces the reference code's metrics (its `metrics/*.py` and the
`loss/*.py` that feed them; docs/faithfulness.md, "The reference's quirks") instead:
- depth: both depths converted with 655.36 / d - 1 (metres minus 0.99), the range mask applied to the
  shifted label; AbsRel, SqRel, MSE, RMSE-log, delta averaged per image; RMSE = sqrt(mean per-image MSE).
- normals: mask ignored (all pixels), prediction not normalised (normalised on NYUv2, whose reference
  config uses the `gt_normals` loss: `MultiTaskMetrics(dataset="nyuv2")`), per-image averaging (median =
  torch's lower median per image), and, as in the reference's `Normals._metrics` which receives one
  image [3, H, W], the vector norms are taken over the image rows (dim 1) instead of the channels.
- edges: `f1` reports the two-class mean F1.
Images without a valid pixel are skipped in the per-image averages (the reference gets NaN).
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from densemtl_lab.atomic import write_json_atomic
from densemtl_lab.data.geometry import unit_channels
from densemtl_lab.losses import LabelError, PredictionError, check_label, check_prediction, resize_to_label
from densemtl_lab.tasks import (
    IGNORE_INDEX, MAX_DEPTH_M, MIN_DEPTH_M, TASKS, decode_depth, parse_tasks,
)

#: The default ODS matching tolerance, as a fraction of the image diagonal (BSDS/SEISM maxDist).
ODS_TOLERANCE = 0.0075
#: Normal-angle thresholds (degrees) of the `within_*` metrics.
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
#: The versioned single-task baselines file shipped with the package.
BASELINES_FILE = Path(__file__).parent / "resources" / "baselines.json"
BASELINES_VERSION = 1
_PROVENANCE_KEYS = ("seeds", "commit", "config")


class NonFinitePredictionError(ValueError):
    """A prediction handed to a metric holds NaN or inf."""


class MissingBaselineError(ValueError):
    """delta_m needs a single-task baseline that the baselines file does not hold."""


class BaselinesFileError(ValueError):
    """The baselines file is missing, unreadable, of another version, or lacks a setting."""


def _rate(numerator: float, denominator: float) -> float:
    """100 * numerator / denominator, NaN when nothing was counted."""
    return 100.0 * numerator / denominator if denominator > 0 else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def _pool_per_image(
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

    task: str

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
        """The task's metrics (names as in tasks.TASKS[task].metrics) over everything seen."""

    def reset(self) -> None:
        """Forget everything seen."""
        self.stats = {k: v.to(torch.float64) for k, v in self._empty_stats().items()}

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Accumulate one batch: raw head output [B, C, h, w] and its data-contract label."""
        check_label(self.task, label)
        check_prediction(self.task, pred, label)
        pred = pred.detach()
        if not torch.isfinite(pred).all():
            raise NonFinitePredictionError(
                f"prediction for task {self.task!r} holds NaN or inf; the model diverged (check the "
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


class SemsegMeter(Meter):
    """mIoU and pixel accuracy from a confusion matrix (rows: label, columns: prediction)."""

    task = "semseg"

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
        return [_ratio(float(h), float(u)) for h, u in zip(hits, union)]

    def compute(self) -> dict[str, float]:
        ious = [self.per_class_iou()[c] for c in self.class_ids]
        seen = [iou for iou in ious if not math.isnan(iou)]
        confusion = self.stats["confusion"]
        return {
            "mIoU": 100.0 * sum(seen) / len(seen) if seen else math.nan,
            "pixel_acc": _rate(float(confusion.trace()), float(confusion.sum())),
        }


class DepthMeter(Meter):
    """AbsRel, SqRel, RMSE, RMSE-log and delta accuracies in metres."""

    task = "depth"
    _SUMS = ("abs_rel", "sq_rel", "sq_err", "sq_log_err", "delta1", "delta2", "delta3")

    def __init__(self, reference_quirks: bool = False) -> None:
        self.reference_quirks = reference_quirks
        super().__init__()

    def _empty_stats(self) -> dict[str, torch.Tensor]:
        return {key: torch.zeros(()) for key in (*self._SUMS, "count")}

    def _batch_stats(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        pred_m = decode_depth(pred, reference_quirk=self.reference_quirks)  # B, 1, H, W
        # The quirk's 655.36 / encode_depth(z) - 1 equals z - 0.99.
        gt_m = label - 0.99 if self.reference_quirks else label
        valid = (label > 0) & (gt_m > MIN_DEPTH_M) & (gt_m < MAX_DEPTH_M)
        gt_m = torch.where(valid, gt_m, torch.ones_like(gt_m))  # keep the masked-out terms finite
        diff = pred_m - gt_m
        ratio = torch.maximum(pred_m / gt_m, gt_m / pred_m)
        terms = {
            "abs_rel": diff.abs() / gt_m,
            "sq_rel": diff.square() / gt_m,
            "sq_err": diff.square(),
            "sq_log_err": (pred_m.log() - gt_m.log()).square(),
            **{f"delta{k}": (ratio < 1.25**k).float() for k in (1, 2, 3)},
        }
        sums = {key: (term * valid).double().sum(dim=(1, 2, 3)) for key, term in terms.items()}
        return _pool_per_image(sums, valid.sum(dim=(1, 2, 3)), self.reference_quirks)

    def compute(self) -> dict[str, float]:
        s = {key: float(value) for key, value in self.stats.items()}
        n = s["count"]
        return {
            "abs_rel": _ratio(s["abs_rel"], n),
            "sq_rel": _ratio(s["sq_rel"], n),
            "rmse": math.sqrt(_ratio(s["sq_err"], n)),
            "rmse_log": math.sqrt(_ratio(s["sq_log_err"], n)),
            **{f"delta{k}": _rate(s[f"delta{k}"], n) for k in (1, 2, 3)},
        }


def _within_key(threshold: float) -> str:
    return f"within_{threshold:g}"


def _channel_length(vectors: torch.Tensor) -> torch.Tensor:
    """|v| over dim 1 ([B, C, H, W] -> [B, H, W]); `norm(dim=1)` takes a slow strided path on the CPU."""
    return (vectors * vectors).sum(dim=1).sqrt()


#: Datasets whose reference config supervises normals with `loss/gt_normals.py` (normals read from
#: files): its evaluation L2-normalises the prediction first. The others use `loss/normals.py`, which does not.
GT_NORMALS_DATASETS = ("nyuv2",)


class NormalsMeter(Meter):
    """Angular error statistics of surface normals in degrees.

    With `reference_quirks`, `normalise_prediction` follows the reference's loss for the dataset:
    True for `gt_normals` (NYUv2), False for the outdoor datasets' `normals` loss.
    """

    task = "normals"

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
        stats = _pool_per_image(sums, mask.sum(dim=1), self.reference_quirks)
        if self.reference_quirks:
            stats["median_sum"] = flat.median(dim=1).values.sum()  # the mask is all ones here
        else:
            bins = (flat[mask] / self.bin_width).long().clamp(0, self.num_bins - 1)
            stats["histogram"] = torch.bincount(bins, minlength=self.num_bins)
        return stats

    def _median(self) -> float:
        if self.reference_quirks:
            return _ratio(float(self.stats["median_sum"]), float(self.stats["count"]))
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
            "mean_angle": _ratio(s["sum"], n),
            "median_angle": self._median(),
            "rmse_angle": math.sqrt(_ratio(s["sum_sq"], n)),
            **{_within_key(t): _rate(s[_within_key(t)], n) for t in ANGLE_THRESHOLDS},
        }


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

    task = "edges"

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
        return [_ratio(2 * float(h), float(s)) for h, s in zip(hits, sizes)]

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


@dataclass(frozen=True)
class MetricOptions:
    """Settings shared by the meters of a MultiTaskMetrics."""

    num_classes: int
    class_ids: tuple[int, ...] | None = None
    reference_quirks: bool = False
    ods_tolerance: float = ODS_TOLERANCE
    dataset: str | None = None  # the dataset evaluated, for the quirks that depend on it


_METERS: dict[str, Callable[[MetricOptions], Meter]] = {
    "semseg": lambda o: SemsegMeter(o.num_classes, o.class_ids),
    "depth": lambda o: DepthMeter(o.reference_quirks),
    "normals": lambda o: NormalsMeter(o.reference_quirks, normalise_prediction=o.dataset in GT_NORMALS_DATASETS),
    "edges": lambda o: EdgesMeter(o.reference_quirks, o.ods_tolerance),
}


class MultiTaskMetrics:
    """One meter per task. `update(outputs, batch)` with outputs = {task: raw scale-0 tensor}."""

    def __init__(
        self,
        tasks: str | Iterable[str],
        num_classes: int,
        class_ids: Iterable[int] | None = None,
        reference_quirks: bool = False,
        ods_tolerance: float = ODS_TOLERANCE,
        dataset: str | None = None,
    ) -> None:
        self.tasks = parse_tasks(tasks)
        options = MetricOptions(
            num_classes, None if class_ids is None else tuple(class_ids), reference_quirks, ods_tolerance, dataset
        )
        self.meters: dict[str, Meter] = {task: _METERS[task](options) for task in self.tasks}

    def update(
        self, outputs: Mapping[str, torch.Tensor | Mapping[int, torch.Tensor]],
        batch: Mapping[str, Any],
    ) -> None:
        """Accumulate one batch. A {scale: tensor} entry (a model's full output) is read at scale 0."""
        for task, meter in self.meters.items():
            if task not in outputs:
                raise PredictionError(
                    f"outputs has no {task!r} prediction; metrics were built for {self.tasks}"
                )
            key = TASKS[task].label_key
            if key not in batch:
                raise LabelError(f"batch has no label {key!r}; drop {task!r} from the metric tasks")
            pred = outputs[task]
            meter.update(pred[0] if isinstance(pred, Mapping) else pred, batch[key])

    def compute(self) -> dict[str, dict[str, float]]:
        """{task: {metric: value}} over everything seen since the last reset."""
        return {task: meter.compute() for task, meter in self.meters.items()}

    def reset(self) -> None:
        for meter in self.meters.values():
            meter.reset()

    def merge(self, other: MultiTaskMetrics) -> None:
        """Add the statistics of another MultiTaskMetrics with the same tasks and settings."""
        if other.tasks != self.tasks:
            raise ValueError(f"cannot merge metrics of tasks {other.tasks} into {self.tasks}")
        for task, meter in self.meters.items():
            meter.merge(other.meters[task])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """{'task/stat': live tensor}; all-reduce each with SUM to merge ranks."""
        return {
            f"{task}/{key}": value
            for task, meter in self.meters.items()
            for key, value in meter.state_tensors().items()
        }


# --- delta_m and the baselines file --------------------------------------------------------------

class Baselines(dict):
    """Task -> the single-task baseline of its main metric, remembering where it came from."""

    def __init__(self, values: Mapping[str, float], source: str) -> None:
        super().__init__(values)
        self.source = source


def _read_baselines_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselinesFileError(
            f"baselines file {path} does not exist; train the single-task models (notebook 02) "
            f"and store them with save_baseline"
        ) from None
    except json.JSONDecodeError as error:
        raise BaselinesFileError(
            f"baselines file {path} is not valid JSON ({error}); restore it from git"
        ) from None
    if not isinstance(data, dict) or data.get("version") != BASELINES_VERSION:
        raise BaselinesFileError(
            f"baselines file {path} has version {data.get('version') if isinstance(data, dict) else None!r}, "
            f"this code reads version {BASELINES_VERSION}; regenerate it with save_baseline"
        )
    return data


def load_baselines(path: str | os.PathLike, setting: str) -> Baselines:
    """The baselines {task: main-metric value} stored for `setting` (e.g. "toy-quick-SDNE")."""
    path = Path(path)
    settings = _read_baselines_file(path).get("settings", {})
    if setting not in settings:
        known = ", ".join(sorted(settings)) or "none yet"
        raise BaselinesFileError(
            f"baselines file {path} has no setting {setting!r} (known: {known}); train the "
            f"single-task models for it (notebook 02) and store them with save_baseline"
        )
    values = {}
    for task, entry in settings[setting].items():
        main = TASKS[task].main_metric
        if entry.get("metric") != main:
            raise BaselinesFileError(
                f"baseline {setting!r}/{task!r} in {path} is for metric {entry.get('metric')!r}, but "
                f"the task's main metric is {main!r}; retrain and save the baseline"
            )
        values[task] = float(entry["value"])
    return Baselines(values, source=f"setting {setting!r} of {path}")


def save_baseline(
    path: str | os.PathLike,
    setting: str,
    task: str,
    metrics: Mapping[str, float],
    provenance: Mapping[str, Any],
) -> None:
    """Store `task`'s main metric (from its `metrics` dict) under `setting`, atomically.

    `provenance` must give `seeds` (list of ints), `commit` (str) and `config` (str or dict). The file is
    created (version BASELINES_VERSION) when missing; other entries are kept.
    """
    path = Path(path)
    (task,) = parse_tasks([task])
    main = TASKS[task].main_metric
    if main not in metrics or not math.isfinite(float(metrics[main])):
        raise ValueError(
            f"metrics for {task!r} must hold a finite {main!r} (its main metric), got {dict(metrics)}"
        )
    missing = [key for key in _PROVENANCE_KEYS if key not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {missing}; give seeds, commit and config for the baseline")
    data = _read_baselines_file(path) if path.exists() else {"version": BASELINES_VERSION, "settings": {}}
    entry = {"metric": main, "value": float(metrics[main])}
    entry.update({key: provenance[key] for key in _PROVENANCE_KEYS})
    data.setdefault("settings", {}).setdefault(setting, {})[task] = entry
    write_json_atomic(path, data)


def delta_m_per_task(
    results: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, float],
    tasks: str | Iterable[str] | None = None,
) -> dict[str, float]:
    """100 * s_t (M_t - B_t) / B_t per task on its main metric, s_t = +1 if higher is better else -1."""
    source = getattr(baselines, "source", "the baselines passed in")
    deltas = {}
    chosen = [key for key in results if key in TASKS] if tasks is None else tasks  # skips e.g. "delta_m"
    for task in parse_tasks(chosen):
        spec = TASKS[task]
        if task not in baselines:
            raise MissingBaselineError(
                f"no single-task baseline for task {task!r} in {source}; train it (notebook 02) and "
                f"store it with save_baseline"
            )
        if task not in results or spec.main_metric not in results[task]:
            raise KeyError(f"results lack {task!r}/{spec.main_metric!r}; evaluate the model on {task!r}")
        base = float(baselines[task])
        if base == 0:
            raise ValueError(f"baseline of {task!r} in {source} is 0; delta_m divides by it")
        value = float(results[task][spec.main_metric])
        deltas[task] = 100.0 * spec.direction(spec.main_metric) * (value - base) / base
    return deltas


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, float],
    tasks: str | Iterable[str] | None = None,
) -> float:
    """Delta_m = (100 / T) sum_t s_t (M_t - B_t) / B_t (Maninis et al. 2019; reference metrics/mtl.py).

    Positive means the multi-task model beats the single-task baselines on average.
    """
    deltas = delta_m_per_task(results, baselines, tasks)
    return sum(deltas.values()) / len(deltas)
