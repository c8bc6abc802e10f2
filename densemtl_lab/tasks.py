"""The task registry: the ground floor every other module asks about tasks.

DenseMTL (Lopes et al., WACV 2023) predicts up to four dense tasks: semantic segmentation (S),
depth (D), surface normals (N) and edges (E). This module holds, in one place, what each task is:
its output channels, the label it reads from a data-contract sample, its metrics and whether higher
or lower is better, its default loss weight, and how a raw network output becomes a prediction in
the label's units. Tasks always appear in one canonical order (S, D, N, E), whatever order a user
names them in, so checkpoints and concatenations never depend on set iteration (a reference quirk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:  # torch is imported where it is used, so that configs and the CLI load without it
    import torch

#: Project-wide ignore index for semantic labels (the reference code's value, configurable there).
IGNORE_INDEX = 250

#: Depth range kept by evaluation, in metres (reference protocol: 1e-3 < z < 80 m).
MIN_DEPTH_M = 1e-3
MAX_DEPTH_M = 80.0


class UnknownTaskError(ValueError):
    """A task name or letter that the registry does not know."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a task and its direction."""

    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class TaskSpec:
    """Everything the rest of the package needs to know about one task."""

    name: str
    letter: str
    label_key: str
    channels: int | None  # None: the number of classes of the dataset
    main_metric: str
    metrics: tuple[MetricSpec, ...]
    colour: str  # name of the colouriser in densemtl_lab.viz.colour

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


def _m(name: str, higher: bool) -> MetricSpec:
    return MetricSpec(name, higher)


TASKS: dict[str, TaskSpec] = {
    "semseg": TaskSpec(
        name="semseg", letter="S", label_key="semseg", channels=None, main_metric="mIoU",
        metrics=(_m("mIoU", True), _m("pixel_acc", True)), colour="palette",
    ),
    "depth": TaskSpec(
        name="depth", letter="D", label_key="depth", channels=1, main_metric="rmse",
        metrics=(_m("abs_rel", False), _m("sq_rel", False), _m("rmse", False),
                 _m("rmse_log", False), _m("delta1", True), _m("delta2", True),
                 _m("delta3", True)),
        colour="depth",
    ),
    "normals": TaskSpec(
        name="normals", letter="N", label_key="normals", channels=3, main_metric="mean_angle",
        metrics=(_m("mean_angle", False), _m("median_angle", False), _m("rmse_angle", False),
                 _m("within_11.25", True), _m("within_22.5", True), _m("within_30", True)),
        colour="normals",
    ),
    "edges": TaskSpec(
        name="edges", letter="E", label_key="edges", channels=2, main_metric="f1",
        metrics=(_m("f1", True), _m("mean_f1", True), _m("ods_f", True)),
        colour="edges",
    ),
}

#: The canonical task order.
TASK_ORDER: tuple[str, ...] = tuple(TASKS)
_BY_LETTER = {spec.letter: name for name, spec in TASKS.items()}

#: The reference's loss weights per task set (configs/*/resnet101_ours_*.yml).
_REFERENCE_WEIGHTS: dict[str, dict[str, float]] = {
    "SD": {"semseg": 50.0, "depth": 1.0},
    "SDN": {"semseg": 100.0, "depth": 1.0, "normals": 100.0},
    "SDNE": {"semseg": 100.0, "depth": 1.0, "normals": 100.0, "edges": 50.0},
}


def parse_tasks(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Turn "SDN", "semseg,depth" or ["depth", "semseg"] into task names in canonical order."""
    if isinstance(spec, str):
        text = spec.strip()
        if "," in text or text.lower() in TASKS:
            items = [part.strip().lower() for part in text.split(",") if part.strip()]
        else:
            items = list(text.upper())
    else:
        items = [str(part) for part in spec]
    names = []
    for item in items:
        name = _BY_LETTER.get(item.upper(), item.lower()) if len(item) == 1 else item.lower()
        if name not in TASKS:
            raise UnknownTaskError(
                f"unknown task {item!r} in tasks={spec!r}; use letters S, D, N, E or the names "
                f"{', '.join(TASK_ORDER)}"
            )
        if name in names:
            raise UnknownTaskError(f"task {name!r} is named twice in tasks={spec!r}")
        names.append(name)
    if not names:
        raise UnknownTaskError(f"tasks={spec!r} names no task; use e.g. 'SDN'")
    return tuple(name for name in TASK_ORDER if name in names)


def task_letters(tasks: Iterable[str]) -> str:
    """The short name of a task set, e.g. ("semseg", "depth") -> "SD"."""
    return "".join(TASKS[name].letter for name in parse_tasks(tasks))


def default_weights(tasks: Iterable[str]) -> dict[str, float]:
    """The reference loss weights for a task set.

    SD, SDN and SDNE take the reference values. A single task gets 1. Any other subset takes
    its tasks' weights from the smallest reference set that contains it (e.g. DN from SDN).
    """
    names = parse_tasks(tasks)
    if len(names) == 1:
        return {names[0]: 1.0}
    for letters in ("SD", "SDN", "SDNE"):
        table = _REFERENCE_WEIGHTS[letters]
        if all(name in table for name in names):
            return {name: table[name] for name in names}
    raise AssertionError("SDNE covers every task")  # pragma: no cover


# --- depth coding -------------------------------------------------------------------------------
# The reference regresses a "normalised inverse depth" d = 65536 / (depth_cm + 1). Predictions are
# decoded back to metres for metrics and pictures.

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


def decode_prediction(task: str, raw: torch.Tensor) -> torch.Tensor:
    """A raw head output [B, C, H, W] -> the prediction in the label's units.

    semseg: class ids [B, H, W]; depth: metres [B, 1, H, W]; normals: unit vectors [B, 3, H, W];
    edges: edge probability [B, 1, H, W].
    """
    if task == "semseg":
        return raw.argmax(dim=1)
    if task == "depth":
        return decode_depth(raw)
    if task == "normals":
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-8)  # F.normalize
    if task == "edges":
        return raw.softmax(dim=1)[:, 1:2]
    raise UnknownTaskError(f"unknown task {task!r}; known: {', '.join(TASK_ORDER)}")


def main_metrics(tasks: Iterable[str]) -> Mapping[str, str]:
    """Task -> its main metric (the one delta_m uses)."""
    return {name: TASKS[name].main_metric for name in parse_tasks(tasks)}
