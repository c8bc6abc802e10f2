"""The CPU's attainable dense TFLOP/s, measured: the rate of large 3x3 convolutions through oneDNN.

A datasheet peak is not a fair ceiling for a CPU: clocks, vector widths and the library's kernels vary by
machine, and torch's float32 matmul goes through MKL, which on AMD processors runs far below what oneDNN's
convolutions reach (2-core AMD EPYC, 2026-12-07: 195 GFLOP/s for a 2048x2048 matmul, 480 for the
convolutions below). The model's own work is mostly convolutions run by oneDNN, so the ceiling here is
the best rate of a few large, well-shaped ones (forward, channels_last, no gradient), in float32 and,
where the CPU computes bf16 natively, in bf16. The benches divide a step's FLOPs by its time and by
this ceiling to give the model FLOP utilisation.

    python bench/cpu_peak.py            # prints {"fp32": TFLOP/s, "bf16": TFLOP/s or null, ...}
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F

from densemtl_lab.runtime import native_cpu_bf16

#: (channels, spatial side, batch) of the 3x3 convolutions timed; the best rate is kept.
SHAPES = ((256, 64, 4), (512, 32, 8))


def convolution_tflops(dtype: torch.dtype, channels: int, side: int, batch: int, repeats: int = 3,
                       calls: int = 8) -> float:
    """The best rate (TFLOP/s) over `repeats` timings of `calls` forward 3x3 convolutions of this shape."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(batch, channels, side, side, generator=generator).to(dtype)
    weight = torch.randn(channels, channels, 3, 3, generator=generator).to(dtype)
    image, weight = (tensor.contiguous(memory_format=torch.channels_last) for tensor in (image, weight))
    flops = 2 * batch * channels * channels * 9 * side * side
    best = float("inf")
    with torch.no_grad():
        F.conv2d(image, weight, padding=1)  # oneDNN builds its kernel on the first call
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                F.conv2d(image, weight, padding=1)
            best = min(best, (time.perf_counter() - started) / calls)
    return flops / best / 1e12


def cpu_peak_tflops() -> dict:
    """{"fp32": ..., "bf16": ... (None without native bf16), "measured_by": ...}: the best rate over SHAPES."""
    bf16 = max(convolution_tflops(torch.bfloat16, *shape) for shape in SHAPES) if native_cpu_bf16() else None
    return {"fp32": round(max(convolution_tflops(torch.float32, *shape) for shape in SHAPES), 4),
            "bf16": None if bf16 is None else round(bf16, 4),
            "measured_by": f"3x3 convolutions (channels, side, batch) {list(SHAPES)}, channels_last, forward, "
                           f"{torch.get_num_threads()} threads"}


def combine(*measurements: dict) -> dict:
    """The highest of several measurements per precision (the machine's speed wanders; the peak is the best)."""
    best = {name: max((m[name] for m in measurements if m[name] is not None), default=None)
            for name in ("fp32", "bf16")}
    return best | {"measured_by": measurements[0]["measured_by"],
                   "measurements": [{name: m[name] for name in ("fp32", "bf16")} for m in measurements]}


if __name__ == "__main__":
    print(json.dumps(cpu_peak_tflops()))
