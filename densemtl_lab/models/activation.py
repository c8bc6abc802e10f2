"""The decoders' ELU, computed on the CPU from `exp` rather than torch's much slower `expm1`.

monodepth2's `ConvBlock` (the official `vendor/monodepth2/layers.py`) ends in `nn.ELU(inplace=True)`.
Since torch computes ELU's negative side with `expm1` (pytorch/pytorch#173968), that op is about 16x
slower than `exp` on our CPUs (2 cores, 4.2 M elements: 23.6 ms against 1.4 ms), and the decoders' ELUs
took 7 % of a float32 and 10 % of a bf16 paper-model step (docs/benchmarks.md). `ELU` computes
max(x, 0) + exp(min(x, 0)) - 1 instead, in float32 for bf16/fp16 inputs as torch does: outputs differ
from torch's by at most 6e-8 (exp(x) - 1 against expm1(x) near 0), and the backward is torch's own
`elu_backward` from the output, as `nn.ELU(inplace=True)` does. Elsewhere than on the CPU it is
`nn.ELU(inplace=True)`. docs/faithfulness.md lists it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

_FULL_PRECISION = (torch.float32, torch.float64)


class _ExpELU(torch.autograd.Function):
    """ELU with alpha 1, in place on its input, from `exp`; the backward uses the saved output."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        negative = x.clamp(max=0) if x.dtype in _FULL_PRECISION else x.float().clamp_(max=0)
        negative = negative.exp_().sub_(1).to(x.dtype)  # exp(min(x, 0)) - 1, 0 where x >= 0; rounded once
        out = x.clamp_(min=0).add_(negative)  # one of the two terms is 0: exact
        ctx.mark_dirty(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)


class ELU(nn.ELU):
    """`nn.ELU(inplace=True)` whose CPU forward uses `exp` (module docstring); its input is overwritten."""

    def __init__(self) -> None:
        super().__init__(alpha=1.0, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return _ExpELU.apply(x)
