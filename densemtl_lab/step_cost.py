"""What a training step costs: the Trainer's own step, timed on batches held in memory.

For comparing settings of one model on the machine at hand (notebook 08: each gradient aggregator
against the plain weighted sum; bench/bench_aggregators.py): every setting trains its own Trainer
from the same seed on the same batches, without evaluation or checkpoints, and reports the median
wall and CPU seconds of its timed steps after untimed warm-up ones (on a GPU, up to the end of the
step's kernels). CPU seconds are the steadier figure on a busy machine (they do not count the time
spent waiting for a core).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from densemtl_lab.config import ExperimentConfig, override
from densemtl_lab.train import Trainer


class HeldSamples(Dataset):
    """Samples already rendered or loaded, held in memory (a dataset for a Trainer that must not wait on data)."""

    def __init__(self, samples: Sequence[dict[str, Any]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


@dataclasses.dataclass(frozen=True)
class StepCost:
    """Median wall and CPU seconds per step, each timed step's wall seconds, and the aggregator's last
    task weights (None for the plain backward and for aggregators that give none)."""

    wall_s: float
    cpu_s: float
    step_walls: tuple[float, ...]
    last_weights: dict[str, float] | None


def step_cost(config: ExperimentConfig, samples: Sequence[dict[str, Any]], *, warmup: int = 1,
              steps: int = 3) -> StepCost:
    """Train `config` on `samples` (at least (warmup + steps) x batch_size of them, in order) and time its steps."""
    batch_size = config.train.batch_size
    needed = (warmup + steps) * batch_size
    if steps < 1 or warmup < 0 or len(samples) < needed:
        raise ValueError(f"step_cost needs steps >= 1, warmup >= 0 and {needed} samples "
                         f"((warmup + steps) x batch_size {batch_size}); got {len(samples)}")
    batches = [default_collate(list(samples[start:start + batch_size])) for start in range(0, needed, batch_size)]
    trainer = Trainer(config, train_set=HeldSamples(samples), val_set=HeldSamples(samples[:batch_size]))
    walls, cpus = [], []
    for index, batch in enumerate(batches):
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.train_step(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)  # the step's kernels, not only their launch
        if index >= warmup:
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    weights = trainer.aggregation.last_weights if trainer.aggregation is not None else None
    return StepCost(statistics.median(walls), statistics.median(cpus), tuple(walls),
                    None if weights is None else dict(zip(trainer.tasks, weights.tolist())))


def aggregator_costs(config: ExperimentConfig, samples: Sequence[dict[str, Any]], aggregators: Sequence[str],
                     *, warmup: int = 1, steps: int = 3) -> dict[str, StepCost]:
    """`step_cost` of `config` with each of `aggregators` on the encoder (`none`: the weighted sum's
    backward), the conflict log off, in the order given."""
    return {name: step_cost(override(config, f"train.aggregator={name}", "train.conflict_every=null"), samples,
                            warmup=warmup, steps=steps)
            for name in aggregators}


def relative_costs(costs: Mapping[str, StepCost], reference: str = "none") -> dict[str, float]:
    """Each setting's median wall seconds per step as a multiple of `reference`'s."""
    if reference not in costs:
        raise KeyError(f"relative_costs: no {reference!r} among {', '.join(costs)}; time it too")
    return {name: cost.wall_s / costs[reference].wall_s for name, cost in costs.items()}
