"""Domain adaptation on the toy pair: target metrics of source-only, adversarial, entropy and oracle runs.

For every seed and method, one training of the profile's model (DenseMTL, tasks SD as the reference's
`configs/da/*`) on the toy source domain, adapting to the toy target domain at `--severity` (oracle: trained on
the labelled target), then evaluated on the target val split and on the source val split. Prints one
JSON object: each run's numbers, and per method the mean and spread (sample standard deviation) over
seeds of target mIoU and depth RMSE, plus the gain of each method over source-only.

One control beside the four methods: "target-bn" is the adversarial run with adversarial weight 0.
Its network sees the target batches in training mode (so its BatchNorm statistics mix both domains)
and its discriminators train, but nothing pushes the network: whatever it gains over source-only
comes from the BatchNorm statistics (an AdaBN-like effect; its random stream differs too), not from
the adversarial loss.

    python bench/bench_uda.py                                   # quick profile, 3 seeds, 4 methods + control
    python bench/bench_uda.py --scene-seed 1 --seeds 0 --methods none adversarial \
        -p adapt.adversarial_weight=0.01                        # tuning on seed-disjoint scenes

`--scene-seed` picks which toy scenes make the train and val splits of both domains; tune on a
scene seed other than the one you report (scenes of different seeds never coincide). The
discriminators are `--discriminator-width` wide (16 here; the reference's is 64).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time

import torch

from densemtl_lab import uda  # noqa: F401  (registers the adaptation methods with the trainer)
from densemtl_lab.config import ADAPT_METHODS, ExperimentConfig, get_profile, override
from densemtl_lab.data.build import build_dataset
from densemtl_lab.machine import cpu_model
from densemtl_lab.train import Trainer

METRICS = {"semseg": "mIoU", "depth": "rmse"}
#: Runs beside adapt.method's values: name -> (adapt.method, other adapt settings).
CONTROLS = {"target-bn": ("adversarial", {"adversarial_weight": 0.0})}


def run_config(args: argparse.Namespace, name: str, seed: int) -> ExperimentConfig:
    method, adapt = CONTROLS.get(name, (name, {}))
    config = get_profile(args.profile, seed=seed, device="cpu", quiet=True, num_threads=args.threads,
                         model={"name": args.model, "tasks": args.tasks},
                         data={"target_dataset": "toy", "severity": args.severity, "scene_seed": args.scene_seed},
                         adapt={"method": method, "discriminator_width": args.discriminator_width})
    config = override(config, *args.assignments)
    config = dataclasses.replace(config, adapt=dataclasses.replace(config.adapt, **adapt))
    return override(config, f"train.eval_every={config.train.steps}")  # evaluate once, after the last step


def main_metrics(metrics: dict) -> dict[str, float]:
    return {f"{task}/{name}": metrics[task][name] for task, name in METRICS.items() if task in metrics}


def train_and_evaluate(name: str, config: ExperimentConfig) -> dict:
    started = time.perf_counter()
    trainer = Trainer(config)
    result = trainer.fit()
    seconds = time.perf_counter() - started
    source_val = build_dataset(config.data, "val", "source", config.model.task_names)
    return {"method": name, "seed": config.train.seed, "seconds": round(seconds, 1),
            "target": main_metrics(result.metrics), "source": main_metrics(trainer.evaluate(source_val)),
            "last_losses": result.history.steps[-1]}


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for method in dict.fromkeys(run["method"] for run in runs):
        mine = [run for run in runs if run["method"] == method]
        summary[method] = {f"{domain}/{key}": spread([run[domain][key] for run in mine])
                           for domain in ("target", "source") for key in mine[0][domain]}
    if "none" in summary:
        baseline = summary["none"]
        for method, values in summary.items():
            values["gain_over_source_only"] = {key: values[key]["mean"] - baseline[key]["mean"]
                                               for key in values if key.startswith("target/")}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--model", default="densemtl")
    parser.add_argument("--tasks", default="SD")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=[*ADAPT_METHODS, *CONTROLS],
                        choices=[*ADAPT_METHODS, *CONTROLS])
    parser.add_argument("--severity", type=float, default=0.5)
    parser.add_argument("--scene-seed", type=int, default=0, help="toy scenes of both domains (tune on another)")
    parser.add_argument("--discriminator-width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("-p", "--set", dest="assignments", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="config change for every run, e.g. -p train.steps=300")
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            runs.append(train_and_evaluate(method, run_config(args, method, seed)))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    config = run_config(args, "adversarial", args.seeds[0])
    print(json.dumps({
        "bench": "uda", "profile": args.profile, "model": args.model, "tasks": args.tasks,
        "severity": args.severity, "scene_seed": args.scene_seed, "seeds": args.seeds,
        "steps": config.train.steps, "batch_size": config.train.batch_size, "size": config.data.size,
        "adapt": config.to_dict()["adapt"], "overrides": args.assignments,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "cpu": cpu_model(),
        "runs": runs, "summary": summarise(runs),
        "all_finite": all(math.isfinite(v) for run in runs for v in run["target"].values()),
    }, indent=2))


if __name__ == "__main__":
    main()
