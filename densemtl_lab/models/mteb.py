"""mTEB, the multi-task exchange block: every task's H/2 feature refined by all the others.

Implements the paper's mTEB (DenseMTL, WACV 2023, method section; the official `models/ours_xatt.py`).
For each target task i, with f_{j->i} = xTAM_{i<-j}(f_i, f_j):

- `add` (the paper and every released config): f~_i = f_i + P_i(concat_j f_{j->i})
- `prod` (ablation):                             f~_i = f_i * P_i(concat_j f_{j->i})
- `replace` (ablation, the reference default):   f~_i = P_i(concat[f_i, f_{j->i} for all j])

P_i is a 1x1 conv (no bias) + BN + ReLU to C channels. The sources j are concatenated in the
canonical task order (semseg, depth, normals, edges); the reference iterated a Python set, whose
order can change between processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn

from densemtl_lab.models.xtam import XTAM, PairInspection, Projection, XTAMConfig
from densemtl_lab.tasks import parse_tasks

EXCHANGE_MODES = ("add", "prod", "replace")


class ExchangeConfigError(ValueError):
    """An exchange block that cannot be built."""


def pair_name(target: str, source: str) -> str:
    """Module key of the xTAM for (target <- source), e.g. "depth_from_semseg"."""
    return f"{target}_from_{source}"


class MultiTaskExchangeBlock(nn.Module):
    """T(T-1) xTAMs and one projection P_i per target: {task: f_i} -> {task: f~_i} (the paper's mTEB)."""

    def __init__(
        self, tasks: str | Sequence[str], channels: int, xtam: XTAMConfig = XTAMConfig(), mode: str = "add"
    ) -> None:
        super().__init__()
        self.tasks = parse_tasks(tasks)
        if len(self.tasks) < 2:
            raise ExchangeConfigError(
                f"tasks={self.tasks}: an exchange needs at least two tasks; use 'stl' for one task"
            )
        if mode not in EXCHANGE_MODES:
            raise ExchangeConfigError(f"exchange_mode={mode!r}; choose one of {', '.join(EXCHANGE_MODES)}")
        self.mode = mode
        self.pairs = tuple((t, s) for t in self.tasks for s in self.tasks if s != t)
        self.xtams = nn.ModuleDict({pair_name(t, s): XTAM(channels, xtam) for t, s in self.pairs})
        inputs = len(self.tasks) if mode == "replace" else len(self.tasks) - 1
        self.fuse = nn.ModuleDict({t: Projection(inputs * channels, channels) for t in self.tasks})

    def sources(self, target: str) -> tuple[str, ...]:
        """The tasks that send features to `target`, in canonical order."""
        return tuple(s for t, s in self.pairs if t == target)

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{task: [B, C, H/2, W/2]} -> refined features of the same shapes (fast attention path)."""
        directional = {
            (t, s): self.xtams[pair_name(t, s)](features[t], features[s]) for t, s in self.pairs
        }
        return self._fuse(features, directional)

    def inspect(
        self, features: Mapping[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[tuple[str, str], PairInspection]]:
        """Like forward through the inspectable path; also returns {(target, source): PairInspection}."""
        inspection = {
            (t, s): self.xtams[pair_name(t, s)].inspect(features[t], features[s]) for t, s in self.pairs
        }
        directional = {pair: seen.directional for pair, seen in inspection.items()}
        return self._fuse(features, directional), inspection

    def _fuse(
        self, features: Mapping[str, torch.Tensor], directional: Mapping[tuple[str, str], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        refined = {}
        for target in self.tasks:
            incoming = [directional[target, source] for source in self.sources(target)]
            if self.mode == "replace":
                refined[target] = self.fuse[target](torch.cat([features[target], *incoming], dim=1))
                continue
            message = self.fuse[target](torch.cat(incoming, dim=1))  # B, C, H/2, W/2
            refined[target] = features[target] + message if self.mode == "add" else features[target] * message
        return refined
