"""What a task is: the interface each task module implements, and the label contract it checks.

A task owns everything about one dense prediction (docs/faithfulness.md gives the reference's
choices): its letter, the label it reads from a data-contract sample and that label's layout, its
head channels, its metrics and their directions, its main metric, its loss and the loss's options,
its streaming meter, how a raw output becomes a prediction in label units, its picture, what a
domain discriminator reads from its output, and how a prepared-dataset cache stores its label.
Losses, metrics, adaptation, data preparation and the visual tools ask the task object; none of them
branches on a task name.

torch and numpy are imported on first use (`densemtl_lab.lazy`): configurations and the command line
load the registry without them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from densemtl_lab.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from densemtl_lab.tasks.meter import Meter, MetricOptions
else:
    np, torch, F = lazy_module("numpy"), lazy_module("torch"), lazy_module("torch.nn.functional")


class UnknownTaskError(ValueError):
    """A task name or letter that the registry does not know."""


class LabelError(ValueError):
    """A label is missing, or has the wrong shape or dtype for its task."""


class PredictionError(ValueError):
    """A prediction is missing or has the wrong shape for its task."""


class ColouriseError(ValueError):
    """A prediction that a colouriser cannot draw (wrong shape or values)."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a task and its direction."""

    name: str
    higher_is_better: bool


def _describe(tensor: torch.Tensor) -> str:
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{dtype} [{','.join(str(size) for size in tensor.shape)}]"


class Task(ABC):
    """One dense prediction task. Subclasses set the attributes and implement the abstract methods.

    Tensors follow the data contract: a raw head output is [B, C, h, w] at any output scale; a
    collated label is int64 class ids [B, H, W] (`label_channels` None) or floats [B, C, H, W].
    """

    name: str                      # full name, also the key of outputs, losses and metrics ("depth")
    letter: str                    # one capital letter for task sets ("D" in "SDN")
    label_key: str                 # the sample key of its label
    channels: int | None           # head channels; None: the dataset's number of classes
    label_channels: int | None     # label channels; None: int64 class ids [B, H, W]
    metrics: tuple[MetricSpec, ...]
    main_metric: str               # the metric of delta_m and of the best checkpoint by default
    title: str                     # figure panel title
    #: What figures draw beside its maps: "legend" (of the classes), "metres" (a colour bar, the map
    #: linear in 1/z) or None.
    figure_key: str | None = None
    #: The choices of `loss(kind=...)`, the first is the default; () when it has one loss.
    loss_kinds: tuple[str, ...] = ()
    #: The loss kinds that read no label (MultiTaskLoss computes them from other inputs; `loss` refuses them).
    label_free_kinds: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<task {self.name} ({self.letter})>"

    @property
    def predicts_classes(self) -> bool:
        """Whether its head gives one logit per class of the dataset."""
        return self.channels is None

    def out_channels(self, num_classes: int) -> int:
        """Channels of this task's prediction head."""
        return num_classes if self.channels is None else self.channels

    def direction(self, metric: str) -> int:
        """+1 when higher is better for `metric`, -1 when lower is better."""
        for spec in self.metrics:
            if spec.name == metric:
                return 1 if spec.higher_is_better else -1
        known = ", ".join(m.name for m in self.metrics)
        raise KeyError(f"task {self.name!r} has no metric {metric!r}; known: {known}")

    # --- the label contract -------------------------------------------------------------------
    def check_label(self, label: torch.Tensor) -> None:
        """Raise LabelError unless `label` is this task's collated data-contract label."""
        channels = self.label_channels
        shape_ok = label.dim() == 3 if channels is None else label.dim() == 4 and label.shape[1] == channels
        dtype_ok = label.dtype == torch.int64 if channels is None else label.dtype.is_floating_point
        if not (shape_ok and dtype_ok):
            dtype = "int64" if channels is None else "floating"
            layout = "[B,H,W]" if channels is None else f"[B,{channels},H,W]"
            raise LabelError(
                f"label {self.name!r} must be {dtype} {layout}, got {_describe(label)}; pass the collated "
                f"batch[{self.name!r}] of the data contract"
            )

    def check_prediction(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Raise PredictionError unless `pred` is a raw [B, C, h, w] head output of this task for `label`."""
        channels = self.channels
        if pred.dim() != 4 or pred.shape[0] != label.shape[0] or (
            channels is not None and pred.shape[1] != channels
        ):
            expected = "num_classes" if channels is None else str(channels)
            raise PredictionError(
                f"prediction for {self.name!r} must be a raw head output [B,{expected},h,w] with "
                f"B={label.shape[0]} like its label, got {_describe(pred)}"
            )

    def prepare(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Check both, then `pred` in float32 resized to the label's size (what losses compare)."""
        self.check_label(label)
        self.check_prediction(pred, label)
        return resize_to_label(pred.float(), label)

    # --- the loss ------------------------------------------------------------------------------
    def loss_kind(self, kind: str | None) -> str | None:
        """`kind` checked against `loss_kinds` (None: the default); ValueError names the choices."""
        if kind is None:
            return self.loss_kinds[0] if self.loss_kinds else None
        if kind not in self.loss_kinds:
            choices = f"use one of {', '.join(self.loss_kinds)}" if self.loss_kinds else "it has one loss"
            raise ValueError(f"{self.name}_loss={kind!r} is unknown; {choices}")
        return kind

    @abstractmethod
    def loss(self, pred: torch.Tensor, label: torch.Tensor, kind: str | None = None) -> torch.Tensor:
        """The loss of one raw output [B, C, h, w] at any scale against the collated label (float32)."""

    # --- evaluation and pictures ------------------------------------------------------------------
    @abstractmethod
    def meter(self, options: MetricOptions) -> Meter:
        """A fresh streaming meter of this task's metrics."""

    @abstractmethod
    def decode(self, raw: torch.Tensor, reference_quirks: bool = False) -> torch.Tensor:
        """A raw head output [B, C, H, W] -> the prediction in the label's units.

        `reference_quirks=True` decodes as the reference code's metrics do (docs/faithfulness.md).
        """

    @abstractmethod
    def colourise(self, prediction: Any, palette: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """One prediction or label in label units (tensor or array, no batch) -> uint8 RGB [H, W, 3].

        `palette` (RGB triples indexed by class id) is for tasks that predict classes.
        """

    # --- adaptation and preparation ---------------------------------------------------------------
    @abstractmethod
    def discriminator_input(self, pred: torch.Tensor, source_label: torch.Tensor | None = None) -> torch.Tensor:
        """The map a domain discriminator sees of a raw output [B, C, H, W] already at the working size.

        `source_label` is the source batch's label of this task (for maps normalised by the source).
        """

    @abstractmethod
    def cache_array(self, label: torch.Tensor) -> np.ndarray:
        """One sample's label (tensor, no batch) -> the array a prepared-dataset cache stores."""


# --- the maths that several tasks share ------------------------------------------------------------

def resize_to_label(pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize `pred` [B, C, h, w] to the label's H x W (align_corners=True, as the reference)."""
    size = tuple(label.shape[-2:])
    if tuple(pred.shape[-2:]) == size:
        return pred
    return F.interpolate(pred, size=size, mode="bilinear", align_corners=True)  # B, C, H, W


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `mask`; 0 (with a zero gradient) when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def self_information(logits: torch.Tensor) -> torch.Tensor:
    """Weighted self-information -p log2 p / log2 C of softmax(logits) [B, C, H, W] (AdvEnt's prob_2_entropy).

    Summed over the C channels it is the entropy normalised to [0, 1]: 1 for a uniform distribution,
    0 for a one-hot one.
    """
    classes = logits.shape[1]
    if classes < 2:
        raise ValueError(f"self-information needs at least 2 classes, got logits with {classes} channel")
    probabilities = logits.float().softmax(dim=1)
    return -probabilities * torch.log2(probabilities + 1e-30) / math.log2(classes)


def picture_map(task: str, prediction: Any, channels: int) -> np.ndarray:
    """A [H, W] (channels 1) or [channels, H, W] numpy array of a tensor or array; a leading 1 is dropped."""
    array = prediction.detach().cpu().numpy() if torch.is_tensor(prediction) else np.asarray(prediction)
    if channels == 1 and array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    expected = 2 if channels == 1 else 3
    if array.ndim != expected or (channels > 1 and array.shape[0] != channels):
        shape = "[H, W] or [1, H, W]" if channels == 1 else f"[{channels}, H, W]"
        raise ColouriseError(f"{task} prediction must be {shape}, got shape {list(array.shape)}")
    return array
