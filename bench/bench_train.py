"""Training speed of the Trainer on the toy data; prints one JSON object.

Three measurements (the quick profile's lesson config unless told otherwise: ResNet-18, widths
(16, 32, 32, 64, 64), 64x128, batch 4, DenseMTL SDN, CPU):

- `training`: one whole training as a user runs it (scenes rendered on the fly, evaluations
  included): wall time, steps/s, images/s and the final metrics. A run longer than --budget seconds
  is stopped like a Ctrl-C (checkpoint-free) and evaluated where it stands.
- `overhead`: the Trainer's step time against a bare PyTorch loop (forward, loss, backward, optimiser
  step) with the same model, optimiser and pre-rendered batches, alternated in blocks in one process.
  The Trainer adds collation, the NaN/inf check (its one host sync), clipping and bookkeeping.
- `allocator`: s/step of the bare loop with and without `runtime.tune_cpu_allocator`, each in a fresh
  subprocess (DENSEMTL_NO_MALLOC_TUNING=1 disables the tuning), at the profile's size and at 256x512.

    python bench/bench_train.py                       # all three (a few minutes on 2 cores)
    python bench/bench_train.py --parts overhead --model mtl --tasks SD

Measure on a quiet machine: while other torch processes run, two threads per process wait on each
other at every parallel region and a smoke step went from 0.13 s to 11-15 s here; `--threads 1`
gives usable (pessimistic) figures then, and the load averages in the report say how busy it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time

import torch
from torch.utils.data import default_collate

from densemtl_lab.config import ExperimentConfig, get_profile, override
from densemtl_lab.data.build import build_dataset
from densemtl_lab.losses import MultiTaskLoss
from densemtl_lab.machine import cpu_model
from densemtl_lab.models import build_model
from densemtl_lab.runtime import tune_cpu_allocator
from densemtl_lab.step_cost import HeldSamples
from densemtl_lab.train import Trainer, build_optimizer, seed_everything


def bench_config(args: argparse.Namespace, *extra: str) -> ExperimentConfig:
    return override(get_profile(args.profile), f"model.name={args.model}", f"model.tasks={args.tasks}",
                    "train.device=cpu", "train.quiet=true", *extra)


def render_samples(config: ExperimentConfig, count: int) -> list[dict]:
    dataset = build_dataset(config.data, "train", tasks=config.model.task_names)
    return [dataset[index] for index in range(count)]


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile and -p, for the benches that time the Trainer's own step."""
    parser.add_argument("--profile", default="quick", help="the profile whose model and step are measured")
    parser.add_argument("-p", "--set", dest="overrides", action="append", default=[],
                        help="a config override, as densemtl-lab train takes it (repeatable)")


def step_trainer(args: argparse.Namespace, batch_count: int) -> tuple[Trainer, list[dict]]:
    """A Trainer of `args.profile` with `args.overrides` on the CPU (no evaluation or checkpoint in the way),
    in train mode, and `batch_count` pre-rendered batches of its batch size."""
    config = override(get_profile(args.profile), "train.device=cpu", "train.quiet=true", "data.num_workers=0",
                      "train.eval_every=1000000", "train.checkpoint_every=1000000", *args.overrides)
    batch_size = config.train.batch_size
    samples = render_samples(config, batch_size * batch_count)
    batches = [default_collate(samples[index:index + batch_size]) for index in range(0, len(samples), batch_size)]
    trainer = Trainer(config, train_set=HeldSamples(samples), val_set=HeldSamples(samples[:batch_size]))
    trainer.model.train()
    return trainer, batches


class BareLoop:
    """Forward + loss + backward + step, nothing else (the reference point for the overhead)."""

    def __init__(self, config: ExperimentConfig) -> None:
        seed_everything(config.train.seed)
        tasks = config.model.task_names
        self.model = build_model(config.model.name, tasks, num_classes=19, **config.model.build_options())
        self.format = torch.channels_last if config.train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.format).train()
        self.criterion = MultiTaskLoss(tasks, config.train.loss_weights, config.train.weighting,
                                       config.train.loss_kinds)
        groups = self.model.parameter_groups()
        self.optimizer = build_optimizer(config.optim, {"backbone": groups["backbone"],
                                                        "default": [*groups["default"], *self.criterion.parameters()]})

    def step(self, batch: dict) -> None:
        outputs = self.model(batch["image"].contiguous(memory_format=self.format))
        total, _ = self.criterion(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()


def timed(run, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of `run()`; CPU time is the steadier figure on a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def bare_steps(bare: BareLoop, batches: list[dict]) -> tuple[float, float]:
    return timed(lambda: [bare.step(batch) for batch in batches], len(batches))


def measure_training(args: argparse.Namespace) -> dict:
    """One whole training of the profile, as `densemtl-lab train` runs it (without a run folder)."""
    config = bench_config(args, *([f"train.steps={args.steps}"] if args.steps else []))
    started = time.perf_counter()
    trainer = Trainer(config)
    built = time.perf_counter()
    stopper = threading.Timer(args.budget, lambda: os.kill(os.getpid(), signal.SIGINT))
    stopper.start()
    result = trainer.fit()
    stopper.cancel()
    metrics = trainer.evaluate() if result.interrupted else result.metrics
    finished = time.perf_counter()
    train_seconds = finished - built
    return {
        "profile": args.profile, "model": args.model, "tasks": config.model.tasks,
        "size": list(config.data.size), "batch_size": config.train.batch_size,
        "steps": result.step, "stopped_by_budget": result.interrupted,
        "evaluations": len(result.history.evals), "build_seconds": round(built - started, 2),
        "train_seconds_with_evaluation": round(train_seconds, 2),
        "wall_seconds": round(finished - started, 2),
        "steps_per_s": round(result.step / train_seconds, 3),
        "images_per_s": round(result.step * config.train.batch_size / train_seconds, 2),
        "final_loss": round(statistics.mean(row["loss"] for row in result.history.steps[-10:]), 4),
        "metrics": metrics,
    }


def measure_overhead(args: argparse.Namespace) -> dict:
    """Trainer versus bare loop, same model, optimiser and pre-rendered batches, alternating blocks."""
    config = bench_config(args, "train.eval_every=1000000", "train.checkpoint_every=1000000")
    batch_size, block = config.train.batch_size, args.block
    samples = render_samples(config, batch_size * block)
    batches = [default_collate(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
    bare = BareLoop(config)
    trainer = Trainer(config, train_set=HeldSamples(samples), val_set=HeldSamples(samples[:batch_size]))
    trainer._record_evaluation = lambda: None  # the loop alone: no evaluation in the timed blocks

    def trainer_block(steps: int) -> tuple[float, float]:
        trainer.config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, steps=trainer.step + steps))
        return timed(trainer.fit, steps)

    bare_steps(bare, batches[:args.warmup])
    trainer_block(args.warmup)
    bare_times, trainer_times = [], []
    for _ in range(args.rounds):
        bare_times.append(bare_steps(bare, batches))
        trainer_times.append(trainer_block(block))
    report = {"blocks": args.rounds, "steps_per_block": block}
    for index, clock in enumerate(("wall", "cpu")):
        bare_s = statistics.median(times[index] for times in bare_times)
        trainer_s = statistics.median(times[index] for times in trainer_times)
        report[clock] = {"bare_s_per_step": round(bare_s, 4), "trainer_s_per_step": round(trainer_s, 4),
                         "ratio": round(trainer_s / bare_s, 3),
                         "bare_blocks": [round(times[index], 4) for times in bare_times],
                         "trainer_blocks": [round(times[index], 4) for times in trainer_times]}
    return report


def allocator_child(args: argparse.Namespace) -> dict:
    """In a fresh process: s/step of the bare loop at --size (tuning as the environment says)."""
    tuned = tune_cpu_allocator()
    config = bench_config(args, f"data.size={json.dumps(args.size)}")
    samples = render_samples(config, config.train.batch_size * 3)
    batches = [default_collate(samples[i:i + config.train.batch_size])
               for i in range(0, len(samples), config.train.batch_size)]
    bare = BareLoop(config)
    bare_steps(bare, batches[:1])
    wall, cpu = bare_steps(bare, batches)
    return {"tuned": tuned, "s_per_step": round(wall, 4), "cpu_s_per_step": round(cpu, 4)}


def measure_allocator(args: argparse.Namespace) -> dict:
    results = {}
    for size in ([list(get_profile(args.profile).data.size)] + [[256, 512]]):
        row = {}
        for label, disabled in (("tuned", "0"), ("untuned", "1")):
            command = [sys.executable, __file__, "--child-allocator", "--size", *map(str, size),
                       "--profile", args.profile, "--model", args.model, "--tasks", args.tasks,
                       *(["--threads", str(args.threads)] if args.threads else [])]
            done = subprocess.run(command, capture_output=True, text=True, check=True,
                                  env={**os.environ, "DENSEMTL_NO_MALLOC_TUNING": disabled})
            row[label] = json.loads(done.stdout)
        row["speedup"] = round(row["untuned"]["s_per_step"] / row["tuned"]["s_per_step"], 3)
        results[f"{size[0]}x{size[1]}"] = row
    return results


PARTS = {"training": measure_training, "overhead": measure_overhead, "allocator": measure_allocator}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="training,overhead,allocator", help="comma-separated: "
                        + ", ".join(PARTS))
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default="densemtl")
    parser.add_argument("--tasks", default="SDN")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of training at most")
    parser.add_argument("--block", type=int, default=10, help="steps per timed overhead block")
    parser.add_argument("--rounds", type=int, default=3, help="alternated overhead blocks of each")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--size", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-allocator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_allocator:
        print(json.dumps(allocator_child(args)))
        return
    report = {"device": "cpu", "cpu": cpu_model(), "cpu_count": os.cpu_count(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    for part in args.parts.split(","):
        report[part] = PARTS[part](args)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
