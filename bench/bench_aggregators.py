"""Seconds per training step of each gradient aggregator (train.aggregator) against the plain backward; prints one JSON object.

The quick profile's lesson model unless told otherwise (DenseMTL SDN, ResNet-18, widths
(16, 32, 32, 64, 64), 64x128, batch 4, CPU). Every aggregator trains its own Trainer from the same
seed on the same pre-rendered batches (no evaluation, no checkpoints); `none` is the ordinary
backward of the weighted sum, the reference of `ratio`. Each row gives the median wall and CPU
seconds of the timed steps after `--warmup` untimed ones; the aggregators run one after another,
in the order given, each in this one process.

    python bench/bench_aggregators.py                               # all offered aggregators, 5 timed steps each
    python bench/bench_aggregators.py --aggregators none,mgda,upgrad --steps 10 --threads 1
    python bench/bench_aggregators.py --aggregators none --conflicts     # + the gradient-conflict log's cost
    python bench/bench_aggregators.py --profile paper-synthia --device cuda --out bench/results/bench_aggregators-paper-gpu.json

`--conflicts` adds a row `none, conflicts measured every step`: the plain backward with
`train.conflict_every=1` (densemtl_lab.conflicts), so that its ratio minus 1, divided by N, is the
log's overhead at `train.conflict_every=N`.

An aggregator whose solvers are missing is reported as skipped with the install command. On a busy
machine the figures stretch (torch threads wait on each other): `--threads 1` and the CPU seconds
are steadier, and the load averages in the report say how busy it was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from densemtl_lab.aggregation import AGGREGATORS, EXTRA_INSTALL, missing_solvers
from densemtl_lab.atomic import write_text_atomic
from densemtl_lab.config import AGGREGATOR_NAMES, ExperimentConfig, get_profile, override
from densemtl_lab.data.build import build_dataset
from densemtl_lab.machine import cpu_model
from densemtl_lab.step_cost import step_cost


def bench_config(args: argparse.Namespace, aggregator: str, conflict_every: int | None = None) -> ExperimentConfig:
    return override(get_profile(args.profile), f"model.name={args.model}", f"model.tasks={args.tasks}",
                    f"train.device={args.device}", "train.quiet=true", f"train.amp={args.amp}",
                    f"train.aggregator={aggregator}", f"train.conflict_every={conflict_every or 'null'}")


def measure(args: argparse.Namespace, aggregator: str, samples: list[dict], conflict_every: int | None = None) -> dict:
    """Median (wall, CPU) seconds per step of one aggregator over the timed steps."""
    cost = step_cost(bench_config(args, aggregator, conflict_every), samples, warmup=args.warmup, steps=args.steps)
    row = {"s_per_step": round(cost.wall_s, 4), "cpu_s_per_step": round(cost.cpu_s, 4),
           "steps": [round(value, 4) for value in cost.step_walls]}
    if cost.last_weights is not None:
        row["last_weights"] = {task: round(weight, 4) for task, weight in cost.last_weights.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aggregators", default=",".join(AGGREGATOR_NAMES),
                        help="comma-separated, 'none' first for the ratio (default: all offered)")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default="densemtl")
    parser.add_argument("--tasks", default="SDN")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per aggregator")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--amp", default="off", help="train.amp (default off: float32 on any device)")
    parser.add_argument("--device", default="cpu", help="train.device: cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--conflicts", action="store_true",
                        help="also time the plain backward with the gradient-conflict log on every step")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.aggregators.split(",")
    unknown = [name for name in names if name not in AGGREGATOR_NAMES]
    if unknown:
        parser.error(f"unknown aggregator(s) {', '.join(unknown)}; use {', '.join(AGGREGATOR_NAMES)}")
    config = bench_config(args, "none")
    batch_size, count = config.train.batch_size, args.warmup + args.steps
    dataset = build_dataset(config.data, "train", tasks=config.model.task_names)
    samples = [dataset[index] for index in range(batch_size * count)]
    device = torch.device(args.device)
    report = {"device": args.device,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
              "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "python": platform.python_version(),
              "profile": args.profile, "model": args.model, "tasks": config.model.tasks,
              "size": list(config.data.size), "batch_size": batch_size, "amp": args.amp,
              "timed_steps": args.steps, "warmup_steps": args.warmup,
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "aggregators": {}}
    for name in names:
        missing = missing_solvers(name) if name in AGGREGATORS else []
        if missing:
            report["aggregators"][name] = {"skipped": f"needs {', '.join(missing)}: {EXTRA_INSTALL}"}
            continue
        report["aggregators"][name] = measure(args, name, samples)
    if args.conflicts:
        report["aggregators"]["none, conflicts measured every step"] = measure(args, "none", samples, 1)
    reference = report["aggregators"].get("none", {}).get("s_per_step")
    if reference:
        for row in report["aggregators"].values():
            if "s_per_step" in row:
                row["ratio"] = round(row["s_per_step"] / reference, 2)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    if args.out is not None:
        write_text_atomic(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
