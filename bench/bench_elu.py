"""The decoders' ELU inside the Trainer's step: torch's `nn.ELU(inplace=True)` against `models.activation.ELU`.

Both run in one process on the same model and batches, in alternating pairs of steps; each ELU call is
timed by itself (a wrapper module around it), so the figure does not drown in the machine's
step-to-step noise, and the whole step is timed too. Prints one JSON object.

    python bench/bench_elu.py                                           # the quick profile's DenseMTL SDN
    python bench/bench_elu.py --profile paper-synthia -p data.dataset=toy -p data.size=[128,256] -p model.weights=null
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from bench_train import add_step_arguments, step_trainer
from densemtl_lab.machine import cpu_model
from densemtl_lab.models.activation import ELU

ARMS = {"torch": lambda: nn.ELU(inplace=True), "ours": ELU}


class TimedActivation(nn.Module):
    """An activation that adds the seconds of each of its calls to `seconds[arm]`."""

    def __init__(self, inner: nn.Module, arm: str, seconds: dict[str, float]) -> None:
        super().__init__()
        self.inner, self.arm, self.seconds = inner, arm, seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        out = self.inner(x)
        self.seconds[self.arm] += time.perf_counter() - started
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of (torch, ours) blocks")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per block")
    args = parser.parse_args()
    trainer, batches = step_trainer(args, 2)
    config = trainer.config
    sites = [(parent, name) for parent in trainer.model.modules()
             for name, child in parent.named_children() if isinstance(child, ELU)]
    elu_seconds = {arm: 0.0 for arm in ARMS}
    step_seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for batch in batches:  # warm-up
        trainer.train_step(batch)
    for _ in range(args.rounds):
        for arm, make in ARMS.items():
            for parent, name in sites:
                setattr(parent, name, TimedActivation(make(), arm, elu_seconds))
            for step in range(args.steps):
                started = time.perf_counter()
                trainer.train_step(batches[step % len(batches)])
                step_seconds[arm].append(time.perf_counter() - started)
    steps = args.rounds * args.steps
    report = {
        "bench": "elu", "profile": args.profile, "overrides": args.overrides, "amp": config.train.amp,
        "channels_last": config.train.channels_last, "size": list(config.data.size),
        "batch_size": config.train.batch_size,
        "elu_calls_per_step": len(sites), "cpu": cpu_model(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "steps_per_arm": steps,
        "elu_forward_ms_per_step": {arm: round(elu_seconds[arm] / steps * 1e3, 1) for arm in ARMS},
        "step_s_median": {arm: round(statistics.median(step_seconds[arm]), 4) for arm in ARMS},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
