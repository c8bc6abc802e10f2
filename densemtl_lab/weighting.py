"""Loss-weighting strategies behind one small interface (LibMTL's `AbsWeighting`, in miniature).

A strategy receives the per-task unweighted losses of one step and returns the total to
backpropagate; `current_weights()` says what multiplies each task's loss right now. Every strategy
also takes static per-task scales `weights` (for "fixed" they default to the reference's
tasks.default_weights; for the adaptive strategies to 1, their papers' setting).

- "fixed": total = sum_t w_t L_t (as the reference, `loss/multi_loss.py`).
- "uncertainty" (Kendall, Gal and Cipolla, CVPR 2018, eq. 7, in LibMTL/mtan's form): learned
  s_t = log sigma_t^2, total = sum_t 0.5 exp(-s_t) w_t L_t + 0.5 s_t. The s_t are parameters, so the
  optimiser must see `criterion.parameters()`. The total can go NEGATIVE (s_t < 0 once L_t is
  small; at the optimum s_t = log(w_t L_t) it is 0.5 + 0.5 log(w_t L_t)): that is expected, not a bug.
- "dwa" (Liu, Johns and Davison, CVPR 2019, eq. 7): lambda_t = T softmax_t(r_t / temperature) with
  r_t = L_t(k-1) / L_t(k-2), where L_t(k) is the mean UNWEIGHTED loss of window k. Our loop counts
  iterations, so a window of `window` training steps stands for the paper's epoch. The first two
  windows use lambda_t = 1. total = sum_t lambda_t w_t L_t. The ratios ignore constant scales, so
  `weights` do not change lambda. Only steps in training mode (`module.train()`) are recorded.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from densemtl_lab.tasks import default_weights


class WeightingError(ValueError):
    """An unknown weighting strategy, bad weights or bad strategy options."""


class Weighting(nn.Module, ABC):
    """Per-task losses in, one total out. Subclasses implement `forward` and `multipliers`."""

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.weights = {task: float(weights[task]) for task in self.tasks}

    @abstractmethod
    def multipliers(self) -> dict[str, float]:
        """The dynamic factor of each task (1 for fixed weighting)."""

    @abstractmethod
    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The total loss of one step from the unweighted per-task losses."""

    def current_weights(self) -> dict[str, float]:
        """What multiplies each task's unweighted loss in the total right now."""
        factors = self.multipliers()
        return {task: factors[task] * self.weights[task] for task in self.tasks}

    def _weighted_sum(self, losses: Mapping[str, torch.Tensor], factors: Mapping[str, Any]) -> torch.Tensor:
        return torch.stack([factors[t] * self.weights[t] * losses[t] for t in self.tasks]).sum()


class FixedWeighting(Weighting):
    """total = sum_t w_t L_t."""

    def multipliers(self) -> dict[str, float]:
        return {task: 1.0 for task in self.tasks}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self._weighted_sum(losses, self.multipliers())


class UncertaintyWeighting(Weighting):
    """Homoscedastic uncertainty weighting with learned log-variances s_t (initialised to 0)."""

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float]) -> None:
        super().__init__(tasks, weights)
        self.log_variance = nn.Parameter(torch.zeros(len(self.tasks)))

    def multipliers(self) -> dict[str, float]:
        factors = 0.5 * torch.exp(-self.log_variance.detach())
        return {task: float(factors[i]) for i, task in enumerate(self.tasks)}

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        factors = 0.5 * torch.exp(-self.log_variance)
        weighted = self._weighted_sum(losses, dict(zip(self.tasks, factors)))
        return weighted + 0.5 * self.log_variance.sum()


class DynamicWeightAverage(Weighting):
    """DWA on windows of `window` training steps; its history travels in the state_dict."""

    def __init__(
        self, tasks: Sequence[str], weights: Mapping[str, float], temperature: float = 2.0,
        window: int = 50,
    ) -> None:
        super().__init__(tasks, weights)
        if not temperature > 0:
            raise WeightingError(f"dwa_temperature={temperature!r} must be > 0 (the paper uses 2)")
        if int(window) != window or window < 1:
            raise WeightingError(f"dwa_window={window!r} must be a positive integer number of steps")
        self.temperature = float(temperature)
        self.window = int(window)
        self._window_sums = [0.0] * len(self.tasks)
        self._steps_in_window = 0
        self._window_means: list[list[float]] = []  # the last two completed windows, oldest first
        self._lambdas = [1.0] * len(self.tasks)

    def multipliers(self) -> dict[str, float]:
        return dict(zip(self.tasks, self._lambdas))

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = self._weighted_sum(losses, self.multipliers())
        if self.training:
            self._record([float(losses[task].detach()) for task in self.tasks])
        return total

    def _record(self, values: list[float]) -> None:
        self._window_sums = [s + v for s, v in zip(self._window_sums, values)]
        self._steps_in_window += 1
        if self._steps_in_window < self.window:
            return
        self._window_means = (self._window_means + [[s / self.window for s in self._window_sums]])[-2:]
        self._window_sums = [0.0] * len(self.tasks)
        self._steps_in_window = 0
        self._lambdas = self._lambdas_from_history()

    def _lambdas_from_history(self) -> list[float]:
        if len(self._window_means) < 2:
            return [1.0] * len(self.tasks)
        older, newer = self._window_means
        ratios = torch.tensor([n / max(o, 1e-12) for n, o in zip(newer, older)], dtype=torch.float64)
        lambdas = len(self.tasks) * torch.softmax(ratios / self.temperature, dim=0)
        return lambdas.tolist()

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "window_sums": list(self._window_sums),
            "steps_in_window": self._steps_in_window,
            "window_means": [list(means) for means in self._window_means],
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if list(state["tasks"]) != list(self.tasks):
            raise WeightingError(
                f"DWA state was saved for tasks {state['tasks']} but this criterion has "
                f"{list(self.tasks)}; resume with the same tasks"
            )
        self._window_sums = [float(v) for v in state["window_sums"]]
        self._steps_in_window = int(state["steps_in_window"])
        self._window_means = [[float(v) for v in means] for means in state["window_means"]]
        self._lambdas = self._lambdas_from_history()


WEIGHTINGS: dict[str, type[Weighting]] = {
    "fixed": FixedWeighting,
    "uncertainty": UncertaintyWeighting,
    "dwa": DynamicWeightAverage,
}


def _resolve_weights(
    kind: str, tasks: Sequence[str], weights: Mapping[str, float] | None
) -> dict[str, float]:
    if weights is None:
        return default_weights(tasks) if kind == "fixed" else {task: 1.0 for task in tasks}
    missing = [task for task in tasks if task not in weights]
    extra = [task for task in weights if task not in tasks]
    if missing or extra:
        raise WeightingError(
            f"weights={dict(weights)} must name exactly the tasks {list(tasks)} "
            f"(missing {missing}, unexpected {extra})"
        )
    bad = {task: w for task, w in weights.items() if not (math.isfinite(w) and w >= 0)}
    if bad:
        raise WeightingError(f"weights {bad} must be finite and >= 0")
    return {task: float(weights[task]) for task in tasks}


def build_weighting(
    kind: str,
    tasks: Sequence[str],
    weights: Mapping[str, float] | None = None,
    *,
    dwa_temperature: float = 2.0,
    dwa_window: int = 50,
) -> Weighting:
    """The weighting strategy `kind` ("fixed", "uncertainty" or "dwa") for `tasks`."""
    if kind not in WEIGHTINGS:
        raise WeightingError(f"weighting={kind!r} is unknown; use one of {', '.join(WEIGHTINGS)}")
    resolved = _resolve_weights(kind, tasks, weights)
    if kind == "dwa":
        return DynamicWeightAverage(tasks, resolved, temperature=dwa_temperature, window=dwa_window)
    return WEIGHTINGS[kind](tasks, resolved)
