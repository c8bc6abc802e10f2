"""xTAM, the cross-task attention module: what task j has to tell task i, as a feature f_{j->i}.

Implements the paper's xTAM (DenseMTL, WACV 2023, method section; the official `models/components.py`).
There is one xTAM per ordered pair (target i <- source j). Both inputs are decoder features at H/2
with C channels:

1. Extractor: g = ReLU(conv3x3(f_j)), the part of the source that this pair uses.
2. Self-attention branch (PAD-Net's SA block): s = conv3x3(g) * sigmoid(conv3x3'(g)), C/2 channels.
3. Correlation-guided branch: queries from the target f_i subsampled by ds (every ds-th pixel),
   keys and values from g max-pooled by ds; A = softmax_over_source(Q K^T / sqrt(C)); o = A V,
   nearest-upsampled by ds and scaled per channel by alpha (initialised to 0, so the branch starts
   switched off, as gamma in SAGAN/DANet).
4. Fusion: f_{j->i} = ReLU(BN(conv1x1([s; o]))), self-attention first.

The correlation branch has two paths that share the same projections: a fast one,
`torch.nn.functional.scaled_dot_product_attention`, which never stores the N x N attention matrix
(on the CPU, float32 and bfloat16 dispatch to the fused `_scaled_dot_product_flash_attention_for_cpu`
kernel, forward and backward; checked with torch.profiler on torch 2.14), and an inspectable one that
computes the softmax explicitly and returns it for the visual tools. `XTAM.forward` takes the fast
path, `XTAM.inspect` the inspectable one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class XTAMConfigError(ValueError):
    """An xTAM configuration or input that cannot work."""


@dataclass(frozen=True)
class XTAMConfig:
    """The attention downsampling `ds` and the ablation switches (the reference `OursAtt` flags)."""

    ds: int = 4
    self_attention: bool = True
    correlation: bool = True
    alpha: bool = True
    full_sa: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.ds, int) or self.ds < 1:
            raise XTAMConfigError(f"xtam_ds={self.ds!r}; give a positive int (the paper uses 4)")
        if not (self.self_attention or self.correlation):
            raise XTAMConfigError(
                "self_attention=False and correlation=False leave the xTAM with no branch; "
                "enable at least one, or use the 'mtl' model for no exchange"
            )

    def self_attention_channels(self, channels: int) -> int:
        """Width of the SA branch: C/2 (the reference's default) or C with `full_sa`."""
        return channels if self.full_sa else channels // 2


@dataclass
class PairInspection:
    """What one xTAM computed for the pair (target <- source), for the attention explorer.

    attention: [B, Nq, Nk], rows sum to 1, positions row-major over `grid` = (H/2/ds, W/2/ds);
    self_attention: [B, C/2, H/2, W/2]; correlation: [B, C, H/2, W/2] after alpha;
    directional: [B, C, H/2, W/2], the fused f_{source->target}. A disabled branch gives None.
    """

    attention: torch.Tensor | None
    grid: tuple[int, int]
    self_attention: torch.Tensor | None
    correlation: torch.Tensor | None
    directional: torch.Tensor


class Projection(nn.Sequential):
    """1x1 conv (no bias) + BN + ReLU: the reference's `Project`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
        )


class Extractor(nn.Sequential):
    """3x3 conv (with bias) + ReLU on the source feature: the pair-specific g."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())


class SelfAttentionBranch(nn.Module):
    """Spatial self-attention (PAD-Net's SABlock): conv3x3(g) * sigmoid(conv3x3'(g)), no biases."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.gate = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x))


class CorrelationBranch(nn.Module):
    """Correlation-guided attention: target queries attend over the source's positions."""

    def __init__(self, channels: int, ds: int, alpha: bool = True) -> None:
        super().__init__()
        self.ds = ds
        self.query = Projection(channels, channels)
        self.key = Projection(channels, channels)
        self.value = Projection(channels, channels)
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1, 1)) if alpha else None

    def forward(
        self, target: torch.Tensor, source: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """target f_i, source g: [B, C, h, w] -> (o [B, C, h, w], attention [B, N, N] or None)."""
        ds = self.ds
        queries = self.query(target[:, :, ::ds, ::ds])  # B, C, h/ds, w/ds (nearest: every ds-th pixel)
        pooled = F.max_pool2d(source, ds, ds)  # B, C, h/ds, w/ds
        keys, values = self.key(pooled), self.value(pooled)
        grid = queries.shape[-2:]
        # B, N, C with unit stride over C: the fused SDPA kernel needs it, else it falls back to math
        q, k, v = (t.flatten(2).transpose(1, 2).contiguous() for t in (queries, keys, values))
        if return_attention:
            scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # B, Nq, Nk
            attention = scores.softmax(dim=-1)
            out = attention @ v  # B, Nq, C
        else:
            attention = None
            # One head; SDPA's default scale is 1/sqrt(C), as in the reference.
            out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # B, Nq, C
        out = out.transpose(1, 2).unflatten(2, grid)  # B, C, h/ds, w/ds
        out = F.interpolate(out, scale_factor=ds, mode="nearest")  # B, C, h, w
        if self.alpha is not None:
            out = out * self.alpha
        return out, attention


class XTAM(nn.Module):
    """Cross-task attention for one ordered pair (target i <- source j), giving f_{j->i} (the paper's xTAM)."""

    def __init__(self, channels: int, config: XTAMConfig = XTAMConfig()) -> None:
        super().__init__()
        self.ds = config.ds
        self.extractor = Extractor(channels)
        sa_channels = config.self_attention_channels(channels)
        self.self_attention = SelfAttentionBranch(channels, sa_channels) if config.self_attention else None
        self.correlation = CorrelationBranch(channels, config.ds, config.alpha) if config.correlation else None
        fused = (sa_channels if config.self_attention else 0) + (channels if config.correlation else 0)
        self.fusion = Projection(fused, channels)

    def forward(self, target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """f_i, f_j [B, C, H/2, W/2] -> f_{j->i} [B, C, H/2, W/2] (fast attention path)."""
        return self._run(target, source, return_attention=False).directional

    def inspect(self, target: torch.Tensor, source: torch.Tensor) -> PairInspection:
        """Like forward, through the inspectable path, returning every intermediate."""
        return self._run(target, source, return_attention=True)

    def _run(self, target: torch.Tensor, source: torch.Tensor, return_attention: bool) -> PairInspection:
        height, width = target.shape[-2:]
        if target.shape != source.shape or height % self.ds or width % self.ds:
            raise XTAMConfigError(
                f"xTAM inputs target {tuple(target.shape)} and source {tuple(source.shape)} must match "
                f"and have H, W divisible by xtam_ds={self.ds}; use a smaller xtam_ds or another image size"
            )
        extracted = self.extractor(source)  # B, C, H/2, W/2
        branches = []
        sa = attention = correlation = None
        if self.self_attention is not None:
            sa = self.self_attention(extracted)  # B, C/2, H/2, W/2
            branches.append(sa)
        if self.correlation is not None:
            correlation, attention = self.correlation(target, extracted, return_attention)  # B, C, H/2, W/2
            branches.append(correlation)
        directional = self.fusion(torch.cat(branches, dim=1))  # B, C, H/2, W/2
        grid = (height // self.ds, width // self.ds)
        return PairInspection(attention, grid, sa, correlation, directional)
