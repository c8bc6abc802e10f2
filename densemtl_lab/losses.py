"""Per-task losses and their multi-task combination (the official `loss/*.py`; docs/faithfulness.md, "Losses").

Every task's loss takes a raw head output [B, C, h, w] at any scale and the collated label of the
data contract; the prediction is first resized to the label size (bilinear, align_corners=True, as
the reference). Losses are computed in float32 whatever the autocast dtype.

- semseg: cross-entropy with the project ignore index (tasks.IGNORE_INDEX).
- depth: BerHu on the reference's normalised inverse depth d = tasks.encode_depth(z), or, with
  kind="l1", L1 in metres over valid pixels.
- normals: 1 - cosine between the L2-normalised prediction and label over valid pixels.
- edges: 2-class softmax cross-entropy with class weights 0.05 (background) / 0.95 (edge).

`MultiTaskLoss` averages each task's loss over the model's output scales and hands the per-task
losses to a weighting strategy (densemtl_lab.weighting): total = sum_t w_t * mean_s L_{t,s} for the
reference's fixed weights.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from densemtl_lab.data.geometry import unit_channels
from densemtl_lab.tasks import (
    IGNORE_INDEX, MAX_DEPTH_M, MIN_DEPTH_M, TASKS, encode_depth, parse_tasks,
)
from densemtl_lab.weighting import build_weighting

#: Edge cross-entropy class weights (background, edge): the reference's pos_weight=0.95.
EDGE_CLASS_WEIGHTS = (0.05, 0.95)
#: BerHu switches from L1 to the scaled L2 branch at this fraction of the batch's largest error.
BERHU_THRESHOLD = 0.2
DEPTH_LOSS_KINDS = ("berhu", "l1")

# label layout per task: (channels, None for [B,H,W]; integer labels?)
_LABEL_LAYOUT: dict[str, tuple[int | None, bool]] = {
    "semseg": (None, True),
    "depth": (1, False),
    "normals": (3, False),
    "edges": (1, False),
}


class LabelError(ValueError):
    """A label is missing, or has the wrong shape or dtype for its task."""


class PredictionError(ValueError):
    """A prediction is missing or has the wrong shape for its task."""


def _describe(tensor: torch.Tensor) -> str:
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{dtype} [{','.join(str(size) for size in tensor.shape)}]"


def check_label(task: str, label: torch.Tensor) -> None:
    """Raise LabelError unless `label` is the collated data-contract label of `task`."""
    channels, integer = _LABEL_LAYOUT[task]
    shape_ok = label.dim() == 3 if channels is None else label.dim() == 4 and label.shape[1] == channels
    dtype_ok = label.dtype == torch.int64 if integer else label.dtype.is_floating_point
    if not (shape_ok and dtype_ok):
        dtype = "int64" if integer else "floating"
        layout = "[B,H,W]" if channels is None else f"[B,{channels},H,W]"
        raise LabelError(
            f"label {task!r} must be {dtype} {layout}, got {_describe(label)}; pass the collated "
            f"batch[{task!r}] of the data contract"
        )


def check_prediction(task: str, pred: torch.Tensor, label: torch.Tensor) -> None:
    """Raise PredictionError unless `pred` is a raw [B, C, h, w] head output of `task` for `label`."""
    channels = TASKS[task].channels
    if pred.dim() != 4 or pred.shape[0] != label.shape[0] or (
        channels is not None and pred.shape[1] != channels
    ):
        expected = "num_classes" if channels is None else str(channels)
        raise PredictionError(
            f"prediction for {task!r} must be a raw head output [B,{expected},h,w] with "
            f"B={label.shape[0]} like its label, got {_describe(pred)}"
        )


def resize_to_label(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize `pred` [B, C, h, w] to the label's H x W (align_corners=True, as the reference)."""
    size = tuple(label.shape[-2:])
    if tuple(pred.shape[-2:]) == size:
        return pred
    return F.interpolate(pred, size=size, mode="bilinear", align_corners=True)  # B, C, H, W


def _prepare(task: str, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    check_label(task, label)
    check_prediction(task, pred, label)
    return resize_to_label(pred.float(), label)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `mask`; 0 (with a zero gradient) when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def semseg_loss(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [B, C, h, w] against int64 labels [B, H, W], ignoring IGNORE_INDEX."""
    logits = _prepare("semseg", pred, label)
    per_pixel = F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX, reduction="none")  # B, H, W
    return _masked_mean(per_pixel, label != IGNORE_INDEX)


def _berhu(pred: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """BerHu on normalised inverse depth (three_ways `berhu`), mean over all pixels."""
    target = encode_depth(depth_m)
    error = (pred - target).abs() * (depth_m > 0)  # masked pixels count as 0 in the mean
    c = BERHU_THRESHOLD * error.detach().max()
    # Guard c == 0 (a perfect batch): the reference divides by zero there and gets NaN gradients.
    scaled_l2 = (error.square() + c.square()) / (2 * c.clamp_min(1e-12))
    return torch.where(error <= c, error, scaled_l2).mean()


_CODE_AT_MAX_DEPTH = float(encode_depth(torch.tensor(MAX_DEPTH_M, dtype=torch.float64)))
_CODE_AT_MIN_DEPTH = float(encode_depth(torch.tensor(MIN_DEPTH_M, dtype=torch.float64)))


def metres_from_code(code: torch.Tensor) -> torch.Tensor:
    """Differentiable inverse of tasks.encode_depth for training.

    The forward values equal tasks.decode_depth (clamped to the evaluation range), but the clamp is
    straight-through: out-of-range outputs get the gradient of the range end instead of none.
    """
    clamped = code + (code.clamp(_CODE_AT_MAX_DEPTH, _CODE_AT_MIN_DEPTH) - code).detach()
    return (65536.0 / clamped - 1.0) / 100.0


def _l1_metres(pred: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """Mean |decode(pred) - z| in metres over pixels with depth."""
    return _masked_mean((metres_from_code(pred) - depth_m).abs(), depth_m > 0)


_DEPTH_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "berhu": _berhu,
    "l1": _l1_metres,
}


def check_depth_loss_kind(kind: str) -> None:
    """Raise ValueError for an unknown depth loss name."""
    if kind not in _DEPTH_LOSSES:
        raise ValueError(f"depth_loss={kind!r} is unknown; use one of {', '.join(DEPTH_LOSS_KINDS)}")


def depth_loss(pred: torch.Tensor, depth_m: torch.Tensor, kind: str = "berhu") -> torch.Tensor:
    """Depth loss of a normalised-inverse-depth output [B, 1, h, w] against metres [B, 1, H, W].

    kind="berhu" (the reference, `vendor/three_ways/loss.py`): e = |d_hat - d| * mask, c = 0.2 * max(e) over the batch
    (detached), per pixel e if e <= c else (e^2 + c^2) / 2c, mean over all pixels.
    kind="l1": mean |metres_from_code(d_hat) - z| over pixels with z > 0.
    """
    check_depth_loss_kind(kind)
    return _DEPTH_LOSSES[kind](_prepare("depth", pred, depth_m), depth_m)


def normals_loss(pred: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos(pred, label) over valid pixels (label not all zero), both L2-normalised (docs/faithfulness.md)."""
    pred = _prepare("normals", pred, normals)
    cosine = (unit_channels(pred) * unit_channels(normals.float())).sum(dim=1)  # B, H, W
    return _masked_mean(1.0 - cosine, normals.ne(0).any(dim=1))


def edges_loss(pred: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Class-weighted 2-class softmax cross-entropy (weights 0.05 / 0.95; torch's weighted mean)."""
    logits = _prepare("edges", pred, edges)
    weight = torch.tensor(EDGE_CLASS_WEIGHTS, dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, (edges[:, 0] > 0.5).long(), weight=weight)


#: Task name -> its loss function `loss(pred, label)`.
TASK_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "semseg": semseg_loss,
    "depth": depth_loss,
    "normals": normals_loss,
    "edges": edges_loss,
}


class MultiTaskLoss(nn.Module):
    """Scale-averaged per-task losses combined by a weighting strategy (the reference's `loss/setup_loss.py`).

    `total, parts = criterion(outputs, batch)` with outputs = {task: {scale: raw tensor}} and the
    collated data-contract batch; parts = {task: detached unweighted loss (mean over scales)}.
    `weights` are static per-task scales: they default to tasks.default_weights for "fixed" and to
    1 for the adaptive strategies, which multiply them (see densemtl_lab.weighting).
    """

    def __init__(
        self,
        tasks: str | Iterable[str],
        weights: Mapping[str, float] | None = None,
        weighting: str = "fixed",
        depth_loss: str = "berhu",
        dwa_temperature: float = 2.0,
        dwa_window: int = 50,
    ) -> None:
        super().__init__()
        check_depth_loss_kind(depth_loss)
        self.tasks = parse_tasks(tasks)
        self.depth_loss_kind = depth_loss
        self._losses = {task: TASK_LOSSES[task] for task in self.tasks}
        if "depth" in self._losses:
            self._losses["depth"] = partial(TASK_LOSSES["depth"], kind=depth_loss)
        self.weighting = build_weighting(
            weighting, self.tasks, weights, dwa_temperature=dwa_temperature, dwa_window=dwa_window
        )

    def task_loss(self, task: str, scales: Mapping[int, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """One task's unweighted loss: the mean over the model's output scales."""
        if not scales:
            raise PredictionError(f"outputs[{task!r}] holds no scale; expected {{0: tensor, ...}}")
        return torch.stack([self._losses[task](pred, label) for pred in scales.values()]).mean()

    def forward(
        self, outputs: Mapping[str, Mapping[int, torch.Tensor]], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = {}
        for task in self.tasks:
            if task not in outputs:
                raise PredictionError(
                    f"outputs has no {task!r} predictions; the criterion was built for tasks "
                    f"{self.tasks}, build the model for the same tasks"
                )
            key = TASKS[task].label_key
            if key not in batch:
                raise LabelError(
                    f"batch has no label {key!r}; the dataset does not supply it, so drop "
                    f"{task!r} from tasks"
                )
            losses[task] = self.task_loss(task, outputs[task], batch[key])
        total = self.weighting(losses)
        return total, {task: loss.detach() for task, loss in losses.items()}

    def current_weights(self) -> dict[str, float]:
        """The multiplier each task's unweighted loss gets in the total right now."""
        return self.weighting.current_weights()
