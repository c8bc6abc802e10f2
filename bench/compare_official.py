"""The official DenseMTL model beside ours, in the same run: seconds per step, peak memory, attained FLOP/s.

The official code (github.com/astra-vision/DenseMTL) is not a dependency and cannot be imported in CI,
so this script runs it from a checkout that you name. Both sides build the paper's SDN model with
random weights (nothing is downloaded): ResNet-101 with a dilated layer4, padnet+ decoders of widths
64-128-128-256-256, 16 classes, xTAM + mTEB at scale 1 (the official
configs/synthia/resnet101_ours_SDN.yml, which builds 111,006,952 parameters on both sides), batch 2.

    git clone https://github.com/astra-vision/DenseMTL /tmp/DenseMTL      # or any checkout of it
    python bench/compare_official.py --reference /tmp/DenseMTL                        # CPU: 128x256 and 256x512
    python bench/compare_official.py --reference /tmp/DenseMTL --device cuda          # GPU: 512x1024

A training step is forward, a surrogate loss (the mean square of every output, every task and scale),
backward, gradient clipping at 10 and Adam (betas 0.9, 0.98; LR 3e-4, backbone 2e-4); an eval step is
an inference_mode forward in eval mode. Each code runs as its own trainer runs it:

- `official`: the reference's defaults (use_amp False: float32; torch.optim.Adam as its
  optim/utils.py builds it; contiguous NCHW; glibc's allocator untouched; cudnn.benchmark on CUDA as
  its configs set it). `official-bf16` adds torch.autocast(bfloat16) around its forward and loss.
- `ours`: `densemtl-lab train --profile paper-synthia` defaults: its train.amp (off: float32, as the
  reference), train.channels_last, the tuned allocator, fused Adam, the float32 heads. `ours-bf16`
  sets train.amp=bf16.

Every (variant, size, mode) runs in a fresh process, and the whole grid is repeated `--rounds` times,
round-robin, so a slow spell of the machine touches both codes alike; the table keeps each cell's
median over rounds. FLOPs are torch's FLOP counter over one step of each code in float32 (forward and
backward for train); GFLOP/s = FLOPs / median seconds, and the model FLOP utilisation against the
device's dense bf16 or fp32 peak: `--peak-tflops`, else on CUDA a table of known GPUs (TF32 for fp32), on
the CPU the rate of large convolutions measured before and after the grid (bench/cpu_peak.py).
Prints one JSON object (and writes it to --out when given).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import platform
import signal
import statistics
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from densemtl_lab.atomic import write_text_atomic
from densemtl_lab.config import get_profile, override
from densemtl_lab.evaluation import autocast_dtype, channels_last_on
from densemtl_lab.machine import cpu_model
from densemtl_lab.models import build_model
from densemtl_lab.runtime import select_device, tune_cpu_allocator
from densemtl_lab.train import build_optimizer, place_model
from cpu_peak import combine, cpu_peak_tflops
from stepbench import run_worker, surrogate_loss, time_steps

VARIANTS = ("official", "official-bf16", "ours", "ours-bf16")
OFFICIAL_CONFIG = "configs/synthia/resnet101_ours_SDN.yml"
OUR_PROFILE = "paper-synthia"
BATCH = 2
#: Dense peak TFLOP/s of some GPUs (vendor datasheets), by a substring of their name: bf16, and fp32 as TF32
#: (torch runs cuDNN convolutions, most of these models' FLOPs, in TF32 by default).
PEAK_TFLOPS = {"H100": {"bf16": 989.4, "fp32": 494.7}, "H200": {"bf16": 989.4, "fp32": 494.7},
               "A100": {"bf16": 312.0, "fp32": 156.0}}


@dataclass(frozen=True)
class Job:
    """One measurement, run in its own process."""

    variant: str
    height: int
    width: int
    mode: str  # "train" or "eval"
    device: str
    warmup: int
    steps: int
    reference: str
    count_flops: bool


# --- the official model ---------------------------------------------------------------------------

class _AttributeDict(dict):
    """A dict whose keys read as attributes, as the reference's EasyDict configs do."""

    def __getattr__(self, key: str) -> object:
        try:
            return self[key]
        except KeyError as missing:
            raise AttributeError(key) from missing


def _as_attributes(value: object) -> object:
    if isinstance(value, dict):
        return _AttributeDict({key: _as_attributes(item) for key, item in value.items()})
    return value


def _stand_in_missing_modules() -> None:
    """The reference imports termcolor (coloured logs) and easydict (configs); stand-ins where absent."""
    if importlib.util.find_spec("termcolor") is None:
        termcolor = types.ModuleType("termcolor")
        termcolor.colored = lambda text, *args, **kwargs: text
        sys.modules["termcolor"] = termcolor
    if importlib.util.find_spec("easydict") is None:
        easydict = types.ModuleType("easydict")
        easydict.EasyDict = _AttributeDict
        sys.modules["easydict"] = easydict


def check_reference(checkout: Path) -> None:
    """Exit with one line unless `checkout` holds the files this script builds the official model from."""
    for name in ("models/ours_xatt.py", "models/parts.py", OFFICIAL_CONFIG):
        if not (checkout / name).is_file():
            sys.exit(f"compare_official: {checkout / name} not found; --reference must name a checkout of "
                     "github.com/astra-vision/DenseMTL")


def build_official(checkout: Path) -> nn.Module:
    """The reference's OursAtt model of its SDN config, built by its own code, with random weights."""
    _stand_in_missing_modules()
    sys.path.insert(0, str(checkout))
    with contextlib.redirect_stdout(sys.stderr):  # its constructor prints a summary
        parts = importlib.import_module("models.parts")
        ours_xatt = importlib.import_module("models.ours_xatt")
        config = _as_attributes(yaml.safe_load((checkout / OFFICIAL_CONFIG).read_text()))
        model_config = config.setup.model
        backbone, channels = parts.get_backbone(model_config.backbone, None, model_config.use_dilation)
        heads = nn.ModuleDict({name: parts.get_head(task.head, channels, **task.kwargs)
                               for name, task in model_config.tasks.items()})
        return ours_xatt.OursAtt(backbone, heads, model_config.tasks, **config.setup.kwargs)


# --- worker side ---------------------------------------------------------------------------------

@dataclass
class _Setup:
    """What a step needs: the forward (image -> output tensors), the optimiser, the input and its autocast."""

    model: nn.Module
    forward: Callable[[torch.Tensor], list[torch.Tensor]]
    optimizer: torch.optim.Optimizer
    image: torch.Tensor
    autocast_dtype: torch.dtype | None
    settings: dict


def _official_setup(job: Job, device: torch.device) -> _Setup:
    model = build_official(Path(job.reference)).to(device)
    backbone = list(model.backbone.parameters())
    chosen = {id(param) for param in backbone}
    rest = [param for param in model.parameters() if id(param) not in chosen]
    optimizer = torch.optim.Adam([{"params": backbone, "lr": 2e-4}, {"params": rest, "lr": 3e-4}], betas=(0.9, 0.98))
    image = torch.rand(BATCH, 3, job.height, job.width, device=device)
    dtype = torch.bfloat16 if job.variant == "official-bf16" else None
    return _Setup(model, lambda x: list(model({("color_aug", 0, 0): x}).values()), optimizer, image, dtype,
                  {"amp": "bf16" if dtype else "off", "channels_last": False, "allocator_tuned": False,
                   "adam": "torch.optim.Adam defaults"})


def _our_setup(job: Job, device: torch.device) -> _Setup:
    config = override(get_profile(OUR_PROFILE), "model.weights=null",  # random weights: nothing to download
                      *(["train.amp=bf16"] if job.variant == "ours-bf16" else []))
    tuned = tune_cpu_allocator() if device.type == "cpu" else False
    channels_last = channels_last_on(device, config.train.channels_last)
    model = build_model(config.model.name, config.model.task_names, num_classes=config.data.classes,
                        **config.model.build_options())
    place_model(model, device, channels_last)
    optimizer = build_optimizer(config.optim, model.parameter_groups())
    image = torch.rand(BATCH, 3, job.height, job.width, device=device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    dtype = autocast_dtype(config.train.amp, device)
    return _Setup(model, lambda x: [out for scales in model(x).values() for out in scales.values()], optimizer,
                  image, dtype, {"amp": config.train.amp, "channels_last": channels_last, "allocator_tuned": tuned,
                                 "adam": f"fused={optimizer.defaults.get('fused')}"})


def _step_function(setup: _Setup, mode: str, device: torch.device) -> Callable[[], None]:
    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=setup.autocast_dtype, enabled=setup.autocast_dtype is not None)

    def train_step() -> None:
        setup.optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = surrogate_loss(setup.forward(setup.image))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(setup.model.parameters(), 10.0)
        setup.optimizer.step()

    def eval_step() -> None:
        with torch.inference_mode(), autocast():
            setup.forward(setup.image)

    return train_step if mode == "train" else eval_step


def _flops(setup: _Setup, mode: str) -> int:
    """torch's FLOP count of one float32 step (forward and backward for train; no optimiser)."""
    counter = FlopCounterMode(display=False)
    if mode == "train":
        with counter:
            surrogate_loss(setup.forward(setup.image)).backward()
        setup.optimizer.zero_grad(set_to_none=True)
    else:
        with counter, torch.inference_mode():
            setup.forward(setup.image)
    return counter.get_total_flops()


def _measure(job: Job) -> dict:
    device = torch.device(job.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    setup = _official_setup(job, device) if job.variant.startswith("official") else _our_setup(job, device)
    setup.model.train(job.mode == "train")
    timing = time_steps(_step_function(setup, job.mode, device), device, job.warmup, job.steps)
    flops = _flops(setup, job.mode) if job.count_flops else None  # after: the memory figures are the steps' own
    return {"params": sum(param.numel() for param in setup.model.parameters()), "settings": setup.settings,
            "step_s": timing.step_s, "images_per_s": round(BATCH / timing.step_s, 3),
            "peak_mem_mib": timing.peak_mem_mib, "peak_total_mib": timing.peak_total_mib,
            "memory_measure": timing.memory_measure, "flops": flops}


# --- driver side ---------------------------------------------------------------------------------

def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(side) for side in size.lower().split("x")) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: expected HxW[,HxW...], e.g. 128x256,256x512") from None


def _peak_tflops(device: torch.device, override: float | None) -> dict | None:
    """The ceiling for the utilisation: --peak-tflops, else a known GPU's datasheet, else the CPU measured now."""
    if override is not None:
        return {"bf16": override, "fp32": override}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next((peaks for key, peaks in PEAK_TFLOPS.items() if key in name), None)
    return cpu_peak_tflops() if device.type == "cpu" else None


def _jobs(args: argparse.Namespace, device: torch.device) -> Iterator[Job]:
    for height, width in args.sizes:
        for mode in args.modes:
            for variant in args.variants:
                yield Job(variant, height, width, mode, str(device), args.warmup, args.steps, str(args.reference),
                          count_flops=variant in ("official", "ours"))


def _summarise(cells: dict, peaks: dict | None) -> dict:
    """Per size and mode: each variant's medians over rounds, GFLOP/s, and its speed and memory against official."""
    table = {}
    for (size, mode), variants in cells.items():
        rows = {}
        for variant, runs in variants.items():
            good = [run for run in runs if "error" not in run]
            if not good:
                rows[variant] = {"error": runs[-1]["error"]}
                continue
            step_s = statistics.median(run["step_s"] for run in good)
            flops = next((run["flops"] for run in good if run.get("flops")), None)
            rows[variant] = {"step_s": round(step_s, 4), "images_per_s": round(BATCH / step_s, 3),
                             "peak_mem_mib": round(statistics.median(run["peak_mem_mib"] for run in good), 1),
                             "peak_total_mib": round(statistics.median(run["peak_total_mib"] for run in good), 1),
                             "params": good[0]["params"], "settings": good[0]["settings"], "flops": flops,
                             "step_s_per_round": [run["step_s"] for run in good]}
        float32_flops = {code: rows.get(code, {}).get("flops") for code in ("official", "ours")}
        for variant, row in rows.items():
            if "error" in row:
                continue
            flops = float32_flops["official" if variant.startswith("official") else "ours"]
            if flops:
                row["gflop_per_s"] = round(flops / row["step_s"] / 1e9, 1)
                peak = (peaks or {}).get("bf16" if variant.endswith("bf16") else "fp32")
                if peak:
                    row["model_flop_utilisation"] = round(flops / row["step_s"] / (peak * 1e12), 4)
            base = rows.get("official", {})
            if "step_s" in base and variant != "official":
                row["speedup_vs_official"] = round(base["step_s"] / row["step_s"], 3)
                row["memory_vs_official"] = round(row["peak_mem_mib"] / base["peak_mem_mib"], 3)
                row["total_memory_vs_official"] = round(row["peak_total_mib"] / base["peak_total_mib"], 3)
        table[f"{size} {mode}"] = rows
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="a checkout of github.com/astra-vision/DenseMTL")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="HxW list (default: 128x256,256x512 on the CPU, 512x1024 on a GPU)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {', '.join(VARIANTS)}")
    parser.add_argument("--modes", default="train,eval", help="train, eval or both")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up steps per measurement")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (the median is kept)")
    parser.add_argument("--rounds", type=int, default=2, help="times the whole grid runs, round-robin")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for the utilisation (default: a known GPU's datasheet; "
                             "on the CPU, measured)")
    parser.add_argument("--job-timeout", type=float, default=900.0, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_measure(Job(**json.loads(args.worker)))))
        return
    if args.reference is None:
        parser.error("--reference is required: a checkout of github.com/astra-vision/DenseMTL")
    check_reference(args.reference)
    args.variants = [variant.strip() for variant in args.variants.split(",") if variant.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not args.modes or set(args.modes) - {"train", "eval"}:
        parser.error(f"--modes {','.join(args.modes)!r}: choose train, eval or train,eval")
    device = select_device(args.device)
    args.sizes = args.sizes or ([(512, 1024)] if device.type == "cuda" else [(128, 256), (256, 512)])
    report = {"bench": "compare_official", "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
              "torch": torch.__version__, "python": platform.python_version(), "cpu_threads": torch.get_num_threads(),
              "reference": str(args.reference), "official_config": OFFICIAL_CONFIG, "our_profile": OUR_PROFILE,
              "batch": BATCH, "warmup": args.warmup, "steps": args.steps, "rounds": args.rounds,
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "table": {}}
    cells: dict = {}
    peak_at_start = _peak_tflops(device, args.peak_tflops)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    try:
        for round_index in range(args.rounds):
            for job in _jobs(args, device):
                size, mode = f"{job.height}x{job.width}", job.mode
                result = run_worker(__file__, asdict(job) | {"count_flops": job.count_flops and round_index == 0},
                                    args.job_timeout)
                cells.setdefault((size, mode), {}).setdefault(job.variant, []).append(result)
                print(f"round {round_index + 1} {size} {mode} {job.variant}: {result}", file=sys.stderr, flush=True)
    except SystemExit as stop:
        report["interrupted"] = str(stop)
    finally:
        measured_twice = device.type == "cpu" and args.peak_tflops is None
        peaks = combine(peak_at_start, cpu_peak_tflops()) if measured_twice else peak_at_start
        report["peak_tflops"] = peaks
        report["table"] = _summarise(cells, peaks)
        text = json.dumps(report, indent=1)
        if args.out is not None:
            write_text_atomic(args.out, text + "\n")
        print(text)


if __name__ == "__main__":
    main()
