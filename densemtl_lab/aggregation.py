"""Gradient aggregation of the shared encoder (`train.aggregator`), through torchjd.

Multi-task methods such as MGDA, PCGrad, CAGrad, IMTL-G, Aligned-MTL, Nash-MTL and UPGrad do not
reweight the losses: they combine the per-task gradients of the SHARED parameters into one update
direction. This module lets the trainer use the implementations of torchjd (torchjd.org; the
methods are not re-written here):

- `torchjd.autojac.mtl_backward` is called on the weighted per-task losses w_t L_t (the unweighted,
  scale-averaged losses of `MultiTaskLoss` times the fixed `train.loss_weights`) with `features` =
  the encoder's five outputs f0..f4, as views that only the decoders read (f2 is computed from f1
  and so on; torchjd needs features that do not depend on each other, see `_keep_features`). It
  stores the Jacobian of the T losses with respect to the encoder's parameters (one row per task)
  in their `.jac` fields and the gradient of each loss with respect to its task-side parameters in
  their `.grad` fields;
- `torchjd.autojac.jac_to_grad(encoder parameters, aggregator)` aggregates that Jacobian into the
  encoder's `.grad`.

What is shared. Only the encoder (`model.encoder`) is shared: it gets the aggregated gradient.
Every other parameter is task-side and gets the gradient of the weighted sum of the task losses
that reach it, exactly what it gets without aggregation: a decoder of `mtl` gets its own task's
gradient w_t dL_t. DenseMTL's exchange block (mTEB) mixes the tasks, but it is NOT treated as shared:
it sits after the encoder features, so it receives sum_t w_t dL_t like a task-side module (torchjd
sums the gradients of tasks that share task-side parameters), as do the decoder levels 4..1 that feed
it (each task's H/2 features are a source of the other tasks' xTAMs) and the cross-task distillation
of `padnet` and `3ways`. Making the mTEB shared would take the Jacobian through every decoder's
H/2 section as well, and the aggregators of the literature act on the shared trunk of a
hard-parameter-sharing network, which here is the encoder. The heads and the level-0 section of a
DenseMTL decoder see only their own task.

`AGGREGATORS` lists the offered names. `none` (the default) keeps the trainer's ordinary backward of
sum_t w_t L_t and never imports torchjd's aggregation path; `sum` is the same update through
torchjd (a control: the same gradients up to rounding); `mean` is torchjd's Mean, (1/T) of it on
the encoder. `cagrad`, `nash-mtl` and `upgrad` need solver packages (cvxpy, ECOS, quadprog) that
come with the extra `pip install 'densemtl-lab[aggregators]'`.

State. Nash-MTL keeps its previous weights (its solver's warm start) between steps: `state_dict` /
`load_state_dict` carry them through the checkpoint. PCGrad draws task orders from torch's global
generator, which the checkpoint's random state restores. The other offered aggregators are
stateless.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

import torch
from torch import nn

from densemtl_lab import distributed
from densemtl_lab.config import AGGREGATOR_NAMES, ConfigError
from densemtl_lab.losses import task_losses

#: What `pip install` adds for the aggregators whose solvers torchjd leaves optional.
EXTRA_INSTALL = "pip install 'densemtl-lab[aggregators]'"
#: CAGrad's c: the CAGrad paper's value for NYUv2 and Cityscapes (also LibMTL's default).
CAGRAD_C = 0.4


@dataclass(frozen=True)
class AggregatorSpec:
    """An offered aggregator: torchjd's class, its constructor, the modules it needs beyond torchjd."""

    title: str
    build: Callable[[int], nn.Module]  # number of tasks -> a torchjd Aggregator
    needs: tuple[str, ...] = ()        # importable module names of the optional solvers
    stateful: bool = False


def _aggregation() -> Any:
    import torchjd.aggregation

    return torchjd.aggregation


#: The offered aggregators (`none` is the trainer's own backward and has no entry).
AGGREGATORS: dict[str, AggregatorSpec] = {
    "sum": AggregatorSpec("Sum (today's update, through torchjd)", lambda tasks: _aggregation().Sum()),
    "mean": AggregatorSpec("Mean", lambda tasks: _aggregation().Mean()),
    "mgda": AggregatorSpec("MGDA (Desideri 2012; Sener and Koltun 2018)", lambda tasks: _aggregation().MGDA()),
    "pcgrad": AggregatorSpec("PCGrad (Yu et al. 2020)", lambda tasks: _aggregation().PCGrad()),
    "cagrad": AggregatorSpec(f"CAGrad (Liu et al. 2021), c={CAGRAD_C}",
                             lambda tasks: _aggregation().CAGrad(c=CAGRAD_C), needs=("cvxpy", "clarabel")),
    "imtl-g": AggregatorSpec("IMTL-G (Liu et al. 2021)", lambda tasks: _aggregation().IMTLG()),
    "aligned-mtl": AggregatorSpec("Aligned-MTL (Senushkin et al. 2023)", lambda tasks: _aggregation().AlignedMTL()),
    "nash-mtl": AggregatorSpec("Nash-MTL (Navon et al. 2022), max_norm=1",
                               lambda tasks: _aggregation().NashMTL(n_tasks=tasks),
                               needs=("cvxpy", "ecos"), stateful=True),
    "upgrad": AggregatorSpec("UPGrad (Quinton and Rey 2024)", lambda tasks: _aggregation().UPGrad(),
                             needs=("qpsolvers", "quadprog")),
}


class MissingExtraError(ConfigError):
    """An aggregator whose solver packages are not installed."""


def check_aggregator_name(name: str) -> None:
    """Raise ConfigError naming the valid aggregators unless `name` is one."""
    if name not in AGGREGATOR_NAMES:
        raise ConfigError(f"train.aggregator={name!r} is unknown; use one of {', '.join(AGGREGATOR_NAMES)}")


def missing_solvers(name: str) -> list[str]:
    """The solver modules that aggregator `name` needs and this environment lacks."""
    return [module for module in AGGREGATORS[name].needs if find_spec(module) is None]


def build_aggregator(name: str, num_tasks: int) -> nn.Module:
    """torchjd's aggregator `name` for `num_tasks` tasks; MissingExtraError when its solvers are missing."""
    check_aggregator_name(name)
    if name == "none":
        raise ConfigError("train.aggregator='none' uses the trainer's own backward; there is no aggregator")
    missing = missing_solvers(name)
    if missing:
        raise MissingExtraError(f"train.aggregator={name!r} needs {', '.join(missing)}: {EXTRA_INSTALL}")
    return AGGREGATORS[name].build(num_tasks)


class GradientAggregation:
    """The trainer's backward through torchjd: aggregated encoder gradient, task-side gradients as usual.

    It watches two things of one training step while `capture()` is active: the encoder's output
    features (a forward hook on `model.encoder`) and the unweighted per-task losses that
    `criterion` hands to its weighting (`losses.task_losses`, so they are exactly the losses of the
    ordinary path). `backward()` then runs `mtl_backward` + `jac_to_grad`.
    """

    def __init__(self, name: str, model: nn.Module, criterion: nn.Module, tasks: Sequence[str],
                 context: distributed.ProcessContext = distributed.ProcessContext()) -> None:
        if len(tasks) < 2:
            raise ConfigError(f"train.aggregator={name!r} combines the gradients of several tasks; "
                              f"tasks={tuple(tasks)} has one")
        self.name = name
        self.tasks = tuple(tasks)
        self.aggregator = build_aggregator(name, len(self.tasks))
        if name == "nash-mtl":  # cvxpy's note on torchjd's problem formulation: harmless, nothing to act on
            warnings.filterwarnings("ignore", message="You are solving a parameterized problem that is not DPP")
        self.criterion = criterion
        self.context = context
        self.shared = [param for param in model.encoder.parameters() if param.requires_grad]
        self.parameters = [param for param in model.parameters() if param.requires_grad]
        self.last_weights: torch.Tensor | None = None  # the aggregator's weights of the last step (if any)
        self._capturing = False
        self._features: list[torch.Tensor] | None = None
        self._losses: dict[str, torch.Tensor] | None = None
        self._hooks = [model.encoder.register_forward_hook(self._keep_features)]

    def _keep_features(self, module: nn.Module, inputs: Any, output: Sequence[torch.Tensor]
                       ) -> list[torch.Tensor] | None:
        """The encoder's outputs as aliases (views), which then replace them for the decoders.

        f1..f4 are computed from each other (f2 = layer2(f1), ...), and mtl_backward expects
        features that are not: the gradient of a loss with respect to f1 would already contain the
        path through f2, which the Jacobian step then backpropagates from f2 a second time. A view
        of f_l is a separate node that only the decoders read, so the gradient reaching it is the
        direct one, and backpropagating all five gives each encoder parameter its total derivative.
        """
        if not self._capturing:
            return None
        self._features = [feature.view_as(feature) for feature in output]
        return list(self._features)

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the features and task losses of the forward and loss computed inside."""
        self._capturing, self._features, self._losses = True, None, None
        try:
            with task_losses(self.criterion) as losses:
                yield
            self._losses = losses or None
        finally:
            self._capturing = False

    def weighted_losses(self) -> list[torch.Tensor]:
        """w_t L_t of the captured step, in task order (the fixed weights of `train.loss_weights`)."""
        if self._features is None or self._losses is None:
            raise RuntimeError("no captured step: run the forward and the criterion inside capture()")
        weights = self.criterion.current_weights()
        return [weights[task] * self._losses[task] for task in self.tasks]

    def backward(self) -> torch.Tensor | None:
        """mtl_backward over the encoder features, then the encoder's Jacobian aggregated into .grad.

        Gradients accumulate into `.grad` (zero them first). Returns the aggregator's task weights.
        """
        from torchjd.autojac import jac_to_grad, mtl_backward

        losses = self.weighted_losses()
        features = [feature for feature in self._features if feature.requires_grad]
        try:
            # retain_graph: the task graphs overlap after the encoder in densemtl, padnet and 3ways (the
            # exchange), so one task's backward must not free the nodes the next one runs through; the
            # graph is released with the step's tensors as usual.
            # parallel_chunk_size=1 under autocast: torchjd differentiates the T rows at once with
            # torch.vmap, whose BatchNorm backward fails on bf16 activations with float32 weights
            # ("expected scalar type BFloat16 but found Float", torch 2.14); one row at a time works.
            mixed = any(feature.dtype != self.shared[0].dtype for feature in features)
            mtl_backward(losses, features=features, shared_params=self.shared, retain_graph=True,
                         parallel_chunk_size=1 if mixed else None)
            self._average_over_processes()
            weights = jac_to_grad(self.shared, self.aggregator)
        finally:
            self._features = self._losses = None
            for param in self.shared:  # a failed step must not leave a Jacobian for the next one
                if hasattr(param, "jac"):
                    del param.jac
        self._match_layouts()
        self.last_weights = None if weights is None else weights.detach()
        return self.last_weights

    def _average_over_processes(self) -> None:
        """Under torchrun, the mean over the ranks of the encoder's Jacobian and of the task-side gradients.

        The trainer runs this path inside DDP's no_sync(), so nothing else reduces them: every rank then
        aggregates the same Jacobian (the global batch's) and takes the same step.
        """
        shared = {id(param) for param in self.shared}
        distributed.all_reduce_mean_together(
            [param.jac for param in self.shared if hasattr(param, "jac")]
            + [param.grad for param in self.parameters if id(param) not in shared and param.grad is not None],
            self.context)

    def _match_layouts(self) -> None:
        """Give every .grad its parameter's strides (channels_last weights get contiguous gradients here).

        loss.backward() does this itself; torchjd's gradients come from autograd.grad and reshapes. Adam's
        fused kernel pairs parameter and gradient elements by memory position: with other strides it
        updates the wrong elements, silently (torch 2.14; the single-tensor Adam is right).
        """
        for param in self.parameters:
            grad = param.grad
            if grad is not None and grad.stride() != param.stride():
                param.grad = torch.empty_like(param).copy_(grad)

    def close(self) -> None:
        """Remove the hooks."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # -- state (the checkpoint's "aggregator" entry) ---------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The aggregator's state between steps (empty for the stateless ones)."""
        state: dict[str, Any] = {"name": self.name}
        if self.name == "nash-mtl":
            weighting = self.aggregator.weighting
            state.update(step=float(weighting.step),
                         prvs_alpha=torch.from_numpy(weighting.prvs_alpha.copy()),
                         normalization_factor=torch.from_numpy(weighting.normalization_factor.copy()))
        return state

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Continue from `state_dict()`; a checkpoint of another aggregator is refused."""
        if state is None or state.get("name") != self.name:
            saved = None if state is None else state.get("name")
            raise ConfigError(f"the checkpoint holds the state of aggregator {saved!r}, not {self.name!r}")
        if self.name == "nash-mtl":
            weighting = self.aggregator.weighting
            weighting.prvs_alpha = state["prvs_alpha"].numpy().copy()
            weighting.normalization_factor = state["normalization_factor"].numpy().copy()
            weighting.step = float(state["step"])
            if weighting.step > 0:
                # torchjd builds its cvxpy problem on the first call (step 0) only; a resumed run
                # starts later, so build it here (every solve sets all of its parameters first).
                weighting._init_optim_problem()
