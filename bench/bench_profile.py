"""Where a training step's time goes, per part of the model: encoder, decoders, heads, exchange, losses, optimiser.

The Trainer's own step (`Trainer.train_step`: autocast, the real multi-task loss, clipping, the
optimiser) runs on pre-rendered toy batches under torch.profiler. Each part's forward is a
`record_function` range opened and closed by module hooks (nothing in the model changes); each
backward op is charged to the part whose forward op created it (autograd's sequence numbers link the
two), so a part's share is its forward plus its backward. The clipping and the optimiser's step are
ranges of their own; what is left (zero_grad, the loss check, backward ops of no part) is "other".
The report also lists the ops with the most self time, and the share of the step spent outside
convolutions (forward or backward): copies, casts, memory-format changes, element-wise work.

    python bench/bench_profile.py                                  # the quick profile's DenseMTL SDN (the lesson model)
    python bench/bench_profile.py --profile paper-synthia -p data.dataset=toy -p data.size=[128,256] -p model.weights=null
    python bench/bench_profile.py -p train.amp=bf16 -p train.channels_last=true

Timed steps (median, without the profiler) come first; the profiled steps are slower by the
profiler's own cost, so the table gives shares, and seconds scaled to the timed median. The step's
FLOPs (torch's counter) over its median time give the attained GFLOP/s, and over the CPU's measured
peak in the step's precision (bench/cpu_peak.py) the model FLOP utilisation; and a bound: the step
if its convolutions ran at that peak (all the step's FLOPs, which are nearly all theirs) while the rest
took what it takes now.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torch.utils.flop_counter import FlopCounterMode

from bench_train import add_step_arguments, step_trainer
from cpu_peak import cpu_peak_tflops
from densemtl_lab.machine import cpu_model
from densemtl_lab.train import Trainer

#: The parts a step is split into, by the name prefix of the modules (or ranges) that make them up.
PARTS = ("encoder", "decoders", "heads", "exchange", "losses", "clipping", "optimiser")
_BACKWARD = "autograd::engine::evaluate_function: "
_CONVOLUTION_OPS = ("aten::convolution", "aten::convolution_backward")


def _part_of(name: str) -> str | None:
    """The part that module `name` (a path in the Trainer's model) belongs to, for its outermost match."""
    if name == "encoder":
        return "encoder"
    if name == "exchange":
        return "exchange"
    pieces = name.split(".")
    if len(pieces) == 4 and pieces[0] == "decoders" and pieces[2] in ("levels", "heads"):
        return "decoders" if pieces[2] == "levels" else "heads"
    return None


@contextmanager
def part_ranges(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Open a `record_function` range named after its part around every module call, the gradient clipping
    and the optimiser step."""
    handles, open_ranges = [], {}

    def enter(key: int, part: str) -> None:
        ranges = open_ranges.setdefault(key, [])
        ranges.append(record_function(part))
        ranges[-1].__enter__()

    def leave(key: int) -> None:
        open_ranges[key].pop().__exit__(None, None, None)

    watched = [(name, module) for name, module in model.named_modules() if _part_of(name)]
    watched.append(("losses", criterion))
    for name, module in watched:
        part = _part_of(name) or name
        handles.append(module.register_forward_pre_hook(lambda m, args, part=part: enter(id(m), part)))
        handles.append(module.register_forward_hook(lambda m, args, out: leave(id(m))))
    handles.append(optimizer.register_step_pre_hook(lambda opt, args, kwargs: enter(id(opt), "optimiser")))
    handles.append(optimizer.register_step_post_hook(lambda opt, args, kwargs: leave(id(opt))))
    clip = torch.nn.utils.clip_grad_norm_

    def ranged_clip(*args, **kwargs):  # the Trainer looks it up at each step
        with record_function("clipping"):
            return clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = ranged_clip
    try:
        yield
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
        for handle in handles:
            handle.remove()


def _part_ancestor(event) -> str | None:
    while event is not None:
        if event.name in PARTS:
            return event.name
        event = event.cpu_parent
    return None


def breakdown(events) -> dict:
    """Microseconds per part (forward, backward) and the top ops of the profiled steps' events."""
    forward, backward = defaultdict(float), defaultdict(float)
    part_of_sequence = {}
    for event in events:
        if event.name in PARTS and _part_ancestor(event.cpu_parent) is None:
            forward[event.name] += event.cpu_time_total
        elif event.sequence_nr >= 0 and not event.name.startswith(_BACKWARD):
            part = _part_ancestor(event)
            if part is not None:
                part_of_sequence.setdefault(event.sequence_nr, part)
    for event in events:
        if event.name.startswith(_BACKWARD) and not (event.cpu_parent and event.cpu_parent.name.startswith(_BACKWARD)):
            backward[part_of_sequence.get(event.sequence_nr, "other")] += event.cpu_time_total
    return {"forward_us": dict(forward), "backward_us": dict(backward)}


def convolution_us(events) -> float:
    """Microseconds inside convolutions, forward and backward (outermost convolution ops, all they call)."""
    def inside_convolution(event) -> bool:
        parent = event.cpu_parent
        while parent is not None:
            if parent.name in _CONVOLUTION_OPS:
                return True
            parent = parent.cpu_parent
        return False

    return sum(event.cpu_time_total for event in events
               if event.name in _CONVOLUTION_OPS and not inside_convolution(event))


def step_flops(trainer: Trainer, batch: dict) -> int:
    """torch's FLOP count of one of the Trainer's steps (forward and backward; the optimiser counts none)."""
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(batch)
    return counter.get_total_flops()


def _top_ops(profiler: torch.profiler.profile, count: int) -> list[dict]:
    """The `count` ops with the most self CPU time, with their share of all ops' self time."""
    averages = [row for row in profiler.key_averages() if row.key not in PARTS and row.key != "ProfilerStep"]
    total = sum(row.self_cpu_time_total for row in averages)
    top = sorted(averages, key=lambda row: row.self_cpu_time_total, reverse=True)[:count]
    return [{"op": row.key, "calls": row.count, "self_share": round(row.self_cpu_time_total / total, 4)}
            for row in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_step_arguments(parser)
    parser.add_argument("--warmup", type=int, default=3, help="steps before anything is timed")
    parser.add_argument("--steps", type=int, default=5, help="timed steps, then as many profiled ones")
    parser.add_argument("--top", type=int, default=15, help="ops listed")
    args = parser.parse_args()
    trainer, batches = step_trainer(args, args.warmup + 2 * args.steps)
    config, batch_size = trainer.config, trainer.config.train.batch_size
    for batch in batches[:args.warmup]:
        trainer.train_step(batch)
    times = []
    for batch in batches[args.warmup:args.warmup + args.steps]:
        started = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    flops = step_flops(trainer, batches[0])
    peaks = cpu_peak_tflops()
    peak = peaks["bf16" if trainer.amp_dtype == torch.bfloat16 else "fp32"]
    with part_ranges(trainer.model, trainer.criterion, trainer.optimizer), \
            torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for batch in batches[args.warmup + args.steps:]:
            with record_function("ProfilerStep"):
                trainer.train_step(batch)
    events = profiler.events()
    parts = breakdown(events)
    step_events = [event for event in events if event.name == "ProfilerStep"]
    profiled_us = sum(event.cpu_time_total for event in step_events)  # the backward runs inside the step
    table = {}
    for part in (*PARTS, "other"):
        us = parts["forward_us"].get(part, 0.0) + parts["backward_us"].get(part, 0.0)
        table[part] = {"share": round(us / profiled_us, 4), "seconds_per_step": round(step_s * us / profiled_us, 4),
                       "backward_share": round(parts["backward_us"].get(part, 0.0) / profiled_us, 4)}
    outside_share = 1 - convolution_us(events) / profiled_us
    accounted = sum(row["share"] for row in table.values())
    table["other"]["share"] = round(table["other"]["share"] + 1 - accounted, 4)
    table["other"]["seconds_per_step"] = round(step_s * table["other"]["share"], 4)
    report = {
        "bench": "profile", "profile": args.profile, "overrides": args.overrides,
        "model": config.model.name, "tasks": config.model.tasks, "backbone": config.model.backbone,
        "size": list(config.data.size), "batch_size": batch_size, "amp": config.train.amp,
        "channels_last": config.train.channels_last, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_model(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "step_s_median": round(step_s, 4), "step_s_timed": [round(t, 4) for t in times],
        "gflop_per_step": round(flops / 1e9, 2), "gflop_per_s": round(flops / step_s / 1e9, 1),
        "peak_tflops": peaks, "model_flop_utilisation": round(flops / step_s / (peak * 1e12), 4) if peak else None,
        "parts": table, "not_convolution_share": round(outside_share, 4),
        # The step if the convolutions ran at the peak and everything else took the time it takes now.
        "step_s_with_convolutions_at_peak": round(step_s * outside_share + flops / (peak * 1e12), 4) if peak else None,
        "top_ops": _top_ops(profiler, args.top),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
