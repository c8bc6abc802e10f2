"""Gradient conflicts between the tasks on the shared encoder: per-task gradients, their norms and cosines.

Two tasks conflict on a shared layer when their gradients point in different directions: a step that
lowers one loss raises the other. With `train.conflict_every = N` the trainer measures this every N
steps, on that step's batch, before its own backward: each task's weighted loss w_t L_t (the weights
the total gives it at that step) is differentiated with respect to the encoder's parameters (one
extra backward per task through the step's graph), and the history's row of that step gets

    grad_norm/<task>          ||g_t||, the length of the task's gradient on the encoder
    grad_cosine/<a>~<b>       g_a . g_b / (||g_a|| ||g_b||) for every pair, in [-1, 1] (NaN if one is 0)

Under the fp16 gradient scaler the losses are scaled before differentiating and the gradients
unscaled after, as in the update. In a distributed run each rank's gradients are averaged over the
ranks first, so every rank logs the same numbers, those of the global batch. The encoder is what the
tasks share (as for `train.aggregator`, see `densemtl_lab.aggregation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import default_collate

from densemtl_lab import distributed
from densemtl_lab.evaluation import to_device
from densemtl_lab.losses import MultiTaskLoss, task_losses

if TYPE_CHECKING:
    from densemtl_lab.config import ExperimentConfig


def task_gradients(losses: Sequence[torch.Tensor], shared: Sequence[torch.Tensor], scale: float = 1.0
                   ) -> torch.Tensor:
    """[T, P] float32: row t is d losses[t] / d shared, flattened over all of `shared` (zeros where the loss
    does not reach a parameter). The graph is kept (retain_graph) for the step's own backward.
    `scale` multiplies each loss before differentiating and divides the gradient after (fp16 scaling)."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss * scale, shared, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(param) if grad is None else grad).reshape(-1).float()
                               for grad, param in zip(grads, shared)]) / scale)
    return torch.stack(rows)


def conflict_statistics(gradients: torch.Tensor, tasks: Sequence[str]) -> dict[str, float]:
    """{"grad_norm/<task>": ||g_t||, "grad_cosine/<a>~<b>": cosine of g_a and g_b} of [T, P] `gradients`."""
    norms = gradients.norm(dim=1)
    products = gradients @ gradients.T
    statistics = {f"grad_norm/{task}": float(norm) for task, norm in zip(tasks, norms)}
    for a, b in combinations(range(len(tasks)), 2):
        denominator = float(norms[a] * norms[b])
        cosine = max(-1.0, min(1.0, float(products[a, b]) / denominator)) if denominator > 0 else float("nan")
        statistics[f"grad_cosine/{tasks[a]}~{tasks[b]}"] = cosine
    return statistics


class ConflictLog:
    """The trainer's measurement of gradient conflicts every `every` steps (see the module docstring)."""

    def __init__(self, model: nn.Module, tasks: Sequence[str], every: int,
                 context: distributed.ProcessContext = distributed.ProcessContext()) -> None:
        self.tasks = tuple(tasks)
        self.every = every
        self.context = context
        self.shared = [param for param in model.encoder.parameters() if param.requires_grad]

    def due(self, step: int) -> bool:
        """Whether step number `step` (counted from 1) is measured."""
        return step % self.every == 0

    def measure(self, losses: Mapping[str, torch.Tensor], weights: Mapping[str, float], scale: float = 1.0
                ) -> dict[str, float]:
        """The statistics of the weighted losses w_t L_t of one step (its graph must still be alive)."""
        gradients = task_gradients([weights[task] * losses[task] for task in self.tasks], self.shared, scale)
        gradients = distributed.all_reduce_mean(gradients, self.context)
        return conflict_statistics(gradients, self.tasks)


def batch_jacobian(model: nn.Module, config: ExperimentConfig, samples: Sequence[Mapping[str, Any]],
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """[T, P]: the encoder gradients of the weighted task losses w_t L_t of `samples` (one batch), in task
    order, with the criterion `config` trains with and the model in evaluation mode (its mode is kept):
    the Jacobian the aggregators of `train.aggregator` read at that batch."""
    criterion = MultiTaskLoss.from_config(config).to(device)
    batch = to_device(default_collate(list(samples)), torch.device(device), channels_last=False)
    was_training = model.training
    model.eval()
    try:
        with task_losses(criterion) as losses:
            criterion(model(batch["image"]), batch)
        weights = criterion.current_weights()
        shared = [param for param in model.encoder.parameters() if param.requires_grad]
        return task_gradients([weights[task] * losses[task] for task in criterion.tasks], shared)
    finally:
        model.train(was_training)

