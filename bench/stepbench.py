"""What the step benchmarks share: timing a step with its peak memory, and running each measurement in a fresh process.

A measurement runs in its own subprocess (`run_worker`: the script again, with `--worker` and a JSON
job), so that one model's allocations, caches and threads do not colour the next. Inside it,
`time_steps` runs warm-up and timed steps and reports the median and the peak memory over the timed
part: on CUDA torch.cuda.max_memory_allocated's growth, on the CPU the peak RSS growth (VmHWM reset
before the first step), else ru_maxrss (which includes start-up).
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

MIB = 2**20


@dataclass(frozen=True)
class StepTiming:
    """The median seconds of the timed steps, the peak memory growth over all steps, and the process's peak."""

    step_s: float
    peak_mem_mib: float
    memory_measure: str
    peak_total_mib: float  # CUDA: max_memory_allocated; CPU: VmHWM (ru_maxrss where it cannot be reset)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def surrogate_loss(outputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """The mean square of every output, summed: a loss that reaches every head and scale, in float32."""
    return sum(output.float().square().mean() for output in outputs)


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> StepTiming:
    """Run `step` `warmup` times, then `steps` timed times (synchronising CUDA after each)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_bytes = torch.cuda.memory_allocated()
    else:
        peak_reset = _reset_peak_rss()
        start_kib = _status_kib("VmRSS") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for index in range(warmup + steps):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - started)
    if device.type == "cuda":
        total_mib = torch.cuda.max_memory_allocated() / MIB
        peak_mib = total_mib - start_bytes / MIB
        memory = "cuda max_memory_allocated growth"
    else:
        end_kib = _status_kib("VmHWM") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        total_mib, peak_mib = end_kib / 1024, (end_kib - start_kib) / 1024
        memory = "peak RSS growth" + ("" if peak_reset else " (ru_maxrss; includes start-up)")
    return StepTiming(round(statistics.median(times), 4), round(peak_mib, 1), memory, round(total_mib, 1))


def run_worker(script: str, job: dict, timeout: float) -> dict:
    """Run `script --worker JOB` in a fresh interpreter; its last stdout line (JSON), or {"error": ...}."""
    command = [sys.executable, script, "--worker", json.dumps(job)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"rc={done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])
