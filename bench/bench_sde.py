"""Depth learnt from video on the toy sequences: its quality over seeds, and the cost of its training step.

Quality (lesson 09's setting: the quick profile's model on SD, the textured target look at severity 1,
`--steps` steps, known poses unless `--pose-source network`): per seed, the median-scaled depth metrics
on the toy val split of
- the photometric (self-supervised) model after training,
- the same network untrained (its first evaluation),
- a constant depth (every pixel at one depth; median scaling makes it the image's median depth),
- the supervised model (BerHu on the depth labels, the same steps), median-scaled and not.

Speed: seconds per training step of the photometric model against the supervised one at the same size,
interleaved in this process (`--timed` steps each after `--warmup`), on pre-rendered batches.
Prints one JSON object.

    python bench/bench_sde.py                        # 3 seeds, 320 steps, MTL; then the step timing
    python bench/bench_sde.py --seeds 0 --model densemtl --steps 160
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.utils.data import default_collate

from densemtl_lab.config import ExperimentConfig, get_profile, override
from densemtl_lab.evaluation import evaluate
from densemtl_lab.machine import cpu_model
from densemtl_lab.metrics import MultiTaskMetrics
from densemtl_lab.train import Trainer

DEPTH_KEYS = ("abs_rel", "rmse", "delta1")
SUPERVISED = ("data.sequence=false", "train.depth_loss=berhu", "model.depth_output=code")


def sde_config(args: argparse.Namespace, seed: int, *extra: str) -> ExperimentConfig:
    """The photometric run of `seed` (extra assignments last, e.g. the supervised ones)."""
    config = get_profile(args.profile, seed=seed, device="cpu", quiet=True, num_threads=args.threads)
    return override(config, f"model.name={args.model}", "model.tasks=SD", "data.domain=target", "data.severity=1.0",
                    "train.depth_loss=photometric", "data.sequence=true", "model.depth_output=disparity",
                    f"model.pose_source={args.pose_source}", f"optim.pose_lr={args.pose_lr}",
                    f"train.steps={args.steps}", f"train.eval_every={args.steps}", *extra)


def depth_only(metrics: dict) -> dict[str, float]:
    return {key: round(metrics["depth"][key], 4) for key in DEPTH_KEYS}


def constant_depth(dataset) -> dict[str, float]:
    """Median-scaled metrics of a constant depth map (any constant: median scaling removes it)."""
    meter = MultiTaskMetrics(["depth"], 1, median_scaling=True)
    for index in range(len(dataset)):
        batch = default_collate([dataset[index]])
        meter.update({"depth": torch.full_like(batch["depth"], 100.0)}, batch)  # the code of about 6.5 m
    return depth_only(meter.compute())


def quality(args: argparse.Namespace, seed: int) -> dict:
    trainer = Trainer(sde_config(args, seed))
    untrained = evaluate(trainer.model, trainer.val_set, median_scaling=True)
    trained = trainer.fit().metrics
    supervised = Trainer(sde_config(args, seed, *SUPERVISED))
    supervised_metrics = supervised.fit().metrics
    return {"seed": seed, "photometric": depth_only(trained), "untrained": depth_only(untrained),
            "constant": constant_depth(trainer.val_set),
            "supervised_median_scaled": depth_only(evaluate(supervised.model, supervised.val_set, median_scaling=True)),
            "supervised": depth_only(supervised_metrics),
            "mIoU": {"photometric": round(trained["semseg"]["mIoU"], 2),
                     "supervised": round(supervised_metrics["semseg"]["mIoU"], 2)}}


def step_seconds(args: argparse.Namespace) -> dict:
    """Median seconds per training step, photometric and supervised, interleaved round by round."""
    trainers = {"photometric": Trainer(sde_config(args, 0)), "supervised": Trainer(sde_config(args, 0, *SUPERVISED))}
    batches = {name: [next(iter(trainer.loader)) for _ in range(2)] for name, trainer in trainers.items()}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for round_ in range(args.warmup + args.timed):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.train_step(batches[name][round_ % 2])
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {**{f"{name}_s": round(value, 4) for name, value in medians.items()},
            "ratio": round(medians["photometric"] / medians["supervised"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default="mtl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--pose-source", default="dataset", choices=("dataset", "network"))
    parser.add_argument("--pose-lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=10)
    args = parser.parse_args()
    started = time.time()
    runs = [quality(args, seed) for seed in args.seeds]
    means = {kind: {key: round(statistics.mean(run[kind][key] for run in runs), 4) for key in DEPTH_KEYS}
             for kind in ("photometric", "untrained", "constant", "supervised_median_scaled", "supervised")}
    report = {"settings": {key: value for key, value in vars(args).items()}, "runs": runs, "means": means,
              "step": step_seconds(args), "seconds": round(time.time() - started),
              "machine": {"cpu": cpu_model(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
