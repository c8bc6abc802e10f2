"""The multi-task loss: per-task losses averaged over output scales and combined by a weighting.

Each task's loss is its own (`Task.loss` in densemtl_lab.tasks, the official `loss/*.py`;
docs/faithfulness.md, "Losses"): it takes a raw head output [B, C, h, w] at any scale and the collated
label of the data contract, resizes the prediction to the label size (bilinear, align_corners=True,
as the reference) and computes in float32 whatever the autocast dtype.

`MultiTaskLoss` averages each task's loss over the model's output scales and hands the per-task
losses to a weighting strategy (densemtl_lab.weighting): total = sum_t w_t * mean_s L_{t,s} for the
reference's fixed weights.

A task whose loss kind reads no label (`Task.label_free_kinds`: depth's "photometric", learnt from
neighbouring frames) gets its loss from a module instead (`build_label_free_loss`), which sees the
task's outputs at every scale and the whole batch; the weighting receives it like any other.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

import torch
import torch.nn as nn

from densemtl_lab.tasks import LabelError, PredictionError, get_task, parse_tasks
from densemtl_lab.weighting import build_weighting

if TYPE_CHECKING:
    from densemtl_lab.config import ExperimentConfig

__all__ = ["LabelError", "MultiTaskLoss", "PredictionError", "build_label_free_loss", "task_losses"]


def build_label_free_loss(task: str, kind: str, **options: Any) -> nn.Module:
    """The module that computes `task`'s label-free loss `kind`: (outputs[task], batch) -> loss.

    `options` go to its constructor (photometric depth: `pose_weights`, `pose_source`)."""
    if (task, kind) == ("depth", "photometric"):
        from densemtl_lab.photometric import ViewSynthesisLoss  # imports kornia only when used

        return ViewSynthesisLoss(**options)
    raise ValueError(f"{task}_loss={kind!r} has no label-free loss module")


class MultiTaskLoss(nn.Module):
    """Scale-averaged per-task losses combined by a weighting strategy (the reference's `loss/setup_loss.py`).

    `total, parts = criterion(outputs, batch)` with outputs = {task: {scale: raw tensor}} and the
    collated data-contract batch; parts = {task: detached unweighted loss (mean over scales)}.
    `weights` are static per-task scales: they default to tasks.default_weights for "fixed" and to
    1 for the adaptive strategies, which multiply them (see densemtl_lab.weighting). `loss_kinds`
    chooses among a task's losses ({task: kind}, e.g. {"depth": "l1"}; `Task.loss_kinds`); a task it
    does not name takes its default loss. `label_free_options` go to the label-free losses' modules
    (`build_label_free_loss`), which `label_free` holds.
    """

    def __init__(
        self,
        tasks: str | Iterable[str],
        weights: Mapping[str, float] | None = None,
        weighting: str = "fixed",
        loss_kinds: Mapping[str, str] | None = None,
        dwa_temperature: float = 2.0,
        dwa_window: int = 50,
        label_free_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kinds = {name: get_task(name).loss_kind(kind) for name, kind in (loss_kinds or {}).items()}
        self.tasks = parse_tasks(tasks)
        self._tasks = {name: get_task(name) for name in self.tasks}
        self.loss_kinds = {name: kinds.get(name, self._tasks[name].loss_kind(None)) for name in self.tasks}
        self.label_free = nn.ModuleDict({
            name: build_label_free_loss(name, kind, **(label_free_options or {}))
            for name, kind in self.loss_kinds.items()
            if kind in self._tasks[name].label_free_kinds})
        self.weighting = build_weighting(
            weighting, self.tasks, weights, dwa_temperature=dwa_temperature, dwa_window=dwa_window
        )

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> MultiTaskLoss:
        """The criterion a run of `config` trains with (its tasks, loss weights, weighting and loss kinds)."""
        train = config.train
        weights = train.loss_weights
        if weights is None and train.depth_loss == "photometric":  # the reference's SDE configs weigh each task 1
            weights = {task: 1.0 for task in config.model.task_names}
        return cls(config.model.task_names, weights, train.weighting, train.loss_kinds,
                   label_free_options={"pose_weights": config.model.pose_weights,
                                       "pose_source": config.model.pose_source})

    def task_loss(self, task: str, scales: Mapping[int, torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """One task's unweighted loss: the mean over the model's output scales."""
        if not scales:
            raise PredictionError(f"outputs[{task!r}] holds no scale; expected {{0: tensor, ...}}")
        spec, kind = self._tasks[task], self.loss_kinds[task]
        return torch.stack([spec.loss(pred, label, kind) for pred in scales.values()]).mean()

    def forward(
        self, outputs: Mapping[str, Mapping[int, torch.Tensor]], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = {}
        for task, spec in self._tasks.items():
            if task not in outputs:
                raise PredictionError(
                    f"outputs has no {task!r} predictions; the criterion was built for tasks "
                    f"{self.tasks}, build the model for the same tasks"
                )
            if task in self.label_free:
                losses[task] = self.label_free[task](outputs[task], batch)
                continue
            if spec.label_key not in batch:
                raise LabelError(
                    f"batch has no label {spec.label_key!r}; the dataset does not supply it, so drop "
                    f"{task!r} from tasks"
                )
            losses[task] = self.task_loss(task, outputs[task], batch[spec.label_key])
        total = self.weighting(losses)
        return total, {task: loss.detach() for task, loss in losses.items()}

    def current_weights(self) -> dict[str, float]:
        """The multiplier each task's unweighted loss gets in the total right now."""
        return self.weighting.current_weights()


@contextmanager
def task_losses(criterion: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within, each forward of `criterion` (a `MultiTaskLoss`) fills the yielded dict with its unweighted
    per-task losses as its weighting receives them, still attached to the graph."""
    captured: dict[str, torch.Tensor] = {}
    hook = criterion.weighting.register_forward_pre_hook(lambda module, inputs: captured.update(inputs[0]))
    try:
        yield captured
    finally:
        hook.remove()
