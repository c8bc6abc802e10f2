"""Speed and memory of DenseMTL and its baselines; prints one JSON object.

For each configuration, image size, model and mode (train step / inference) a fresh subprocess builds
the model, runs warm-up and timed steps and reports the median step time, images per second and peak
memory: on CUDA torch.cuda.max_memory_allocated over the steps, on the CPU the peak RSS growth over the
steps (VmHWM reset before the first step, after calling `tune_cpu_allocator`). A training step is
forward + a surrogate loss (mean of squared outputs, every task and scale) + backward + Adam step.

`densemtl-inspect` is DenseMTL trained through the inspectable attention path (`return_attention=True`);
its train peak minus DenseMTL's is compared with the size of the attention matrices the fast path never
stores: batch x pairs x N^2 x 4 bytes with N = H/8 x W/8.

    python bench/bench_model.py                      # lesson config (minutes on a laptop CPU)
    python bench/bench_model.py --config paper       # ResNet-101: 256x512 batch 2 on the CPU, 512x1024 on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
from dataclasses import asdict, dataclass

import torch

from densemtl_lab.machine import cpu_model
from densemtl_lab.models import PAPER_WIDTHS, build_model
from densemtl_lab.runtime import select_device, tune_cpu_allocator
from densemtl_lab.tasks import parse_tasks
from stepbench import MIB, run_worker, surrogate_loss, time_steps

MODELS = ("stl", "mtl", "padnet", "3ways", "densemtl", "densemtl-inspect")


@dataclass(frozen=True)
class BenchConfig:
    """One named benchmark setting."""

    backbone: str
    widths: tuple[int, ...]
    tasks: str
    num_classes: int
    batch: int
    sizes: tuple[tuple[int, int], ...]


CONFIGS = {
    "lesson": BenchConfig("resnet18", (16, 32, 32, 64, 64), "SDN", 19, 8, ((64, 128), (128, 256))),
    "paper-cpu": BenchConfig("resnet101", PAPER_WIDTHS, "SDN", 16, 2, ((256, 512),)),
    "paper-gpu": BenchConfig("resnet101", PAPER_WIDTHS, "SDN", 16, 2, ((512, 1024),)),
}


@dataclass(frozen=True)
class Job:
    """One measurement, run in its own process."""

    config: str
    model: str
    height: int
    width: int
    mode: str  # "train" or "eval"
    device: str
    warmup: int
    steps: int
    threads: int | None


# --- worker side ---------------------------------------------------------------------------------

def _measure(job: Job) -> dict:
    device = torch.device(job.device)
    if device.type == "cpu":
        tune_cpu_allocator()
    if job.threads:
        torch.set_num_threads(job.threads)
    config = CONFIGS[job.config]
    inspect = job.model == "densemtl-inspect"
    name = "densemtl" if inspect else job.model
    tasks = parse_tasks(config.tasks)[:1] if name == "stl" else config.tasks
    torch.manual_seed(0)
    model = build_model(name, tasks, config.backbone, config.num_classes, decoder_widths=config.widths).to(device)
    image = torch.rand(config.batch, 3, job.height, job.width, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def forward() -> dict:
        return model(image, return_attention=True)[0] if inspect else model(image)

    def step() -> None:
        if job.mode == "train":
            optimizer.zero_grad(set_to_none=True)
            surrogate_loss(out for scales in forward().values() for out in scales.values()).backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                forward()

    model.train(job.mode == "train")
    timing = time_steps(step, device, job.warmup, job.steps)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "tasks": "".join(t[0].upper() for t in tasks),
        "step_s": timing.step_s,
        "images_per_s": round(config.batch / timing.step_s, 3),
        "peak_mem_mib": timing.peak_mem_mib,
        "memory_measure": timing.memory_measure,
    }


# --- driver side ---------------------------------------------------------------------------------

def _attention_gap(config: BenchConfig, height: int, width: int, results: dict) -> dict:
    tasks = len(parse_tasks(config.tasks))
    tokens = (height // 8) * (width // 8)
    expected = config.batch * tasks * (tasks - 1) * tokens**2 * 4 / MIB
    fast = results.get("densemtl", {}).get("train", {}).get("peak_mem_mib")
    slow = results.get("densemtl-inspect", {}).get("train", {}).get("peak_mem_mib")
    gap = None if fast is None or slow is None else round(slow - fast, 1)
    return {
        "batch": config.batch, "pairs": tasks * (tasks - 1), "tokens_N": tokens,
        "expected_gap_mib": round(expected, 1), "fast_train_peak_mib": fast, "inspect_train_peak_mib": slow,
        "measured_gap_mib": gap, "gap_at_least_expected": None if gap is None else gap >= expected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=("lesson", "paper", "all"), default="lesson")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list from {', '.join(MODELS)}")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 2; paper on CPU 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5; paper on CPU 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker (default: torch's)")
    parser.add_argument("--job-timeout", type=float, default=600.0, help="seconds per measurement")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_measure(Job(**json.loads(args.worker)))))
        return

    device = select_device(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    paper = "paper-gpu" if device.type == "cuda" else "paper-cpu"
    names = {"lesson": ["lesson"], "paper": [paper], "all": ["lesson", paper]}[args.config]

    report: dict = {
        "bench": "model", "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
        "cpu": cpu_model(), "cpu_threads": args.threads or torch.get_num_threads(), "models": models,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "notes": [
            "stl is one single-task network (the first task of the set); T tasks need T of them",
            "train step = forward + mean-square surrogate loss + backward + Adam; eval = inference_mode forward",
            "paper config on the CPU runs at 256x512 batch 2 (512x1024 on a GPU)",
        ],
        "configs": {},
    }
    # A timeout's SIGTERM still prints what was measured so far.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    try:
        _run_configs(names, models, args, device, report)
    except SystemExit as stop:
        report["interrupted"] = str(stop)
    finally:
        print(json.dumps(report, indent=1))


def _run_configs(names: list[str], models: list[str], args: argparse.Namespace, device: torch.device,
                 report: dict) -> None:
    """Measure every config, size, model and mode, filling `report` as results come in."""
    for name in names:
        config = CONFIGS[name]
        slow_cpu = name == "paper-cpu"
        warmup = args.warmup if args.warmup is not None else (1 if slow_cpu else 2)
        steps = args.steps if args.steps is not None else (2 if slow_cpu else 5)
        entry = {**asdict(config), "warmup": warmup, "steps": steps, "results": {}, "attention_memory": {}}
        report["configs"][name] = entry
        for height, width in config.sizes:
            size = f"{height}x{width}"
            results = entry["results"].setdefault(size, {})
            for model in models:
                for mode in ("train", "eval"):
                    job = Job(name, model, height, width, mode, str(device), warmup, steps, args.threads)
                    results.setdefault(model, {})[mode] = run_worker(__file__, asdict(job), args.job_timeout)
                    print(f"{name} {size} {model} {mode}: {results[model][mode]}", file=sys.stderr, flush=True)
                entry["attention_memory"][size] = _attention_gap(config, height, width, results)

if __name__ == "__main__":
    main()
