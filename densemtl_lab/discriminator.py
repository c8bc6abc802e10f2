"""Output-space domain discriminators: one per task and output scale (the official `models/discriminator.py`).

Each discriminator is the reference's (after Wang et al.'s semi-supervised multi-task discriminator):
a random horizontal flip of its input, then five spectral-normalised 4x4 convolutions of stride 2
with `width` x (1, 2, 4, 8) channels and one output channel, a LeakyReLU(0.2) after the first four.
Its output is a patch map of domain logits (0 = source, 1 = target) at 1/32 of the input size.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from densemtl_lab.tasks import TASKS

#: Channel multipliers of the first four convolutions (the fifth has one output channel).
WIDTH_MULTIPLIERS = (1, 2, 4, 8)
LEAKY_SLOPE = 0.2


class OutputDiscriminator(nn.Module):
    """Random hflip, then 5 spectral-normalised 4x4/2 convolutions: in -> w -> 2w -> 4w -> 8w -> 1."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        if in_channels < 1 or width < 1:
            raise ValueError(f"in_channels={in_channels} and width={width} must be >= 1")
        channels = [in_channels, *(width * m for m in WIDTH_MULTIPLIERS), 1]
        layers: list[nn.Module] = []
        for index, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(spectral_norm(nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1)))
            if index < len(WIDTH_MULTIPLIERS):
                layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Domain logits [B, 1, H/32, W/32] of discriminator input maps [B, C, H, W]."""
        if self.training and torch.rand(()) < 0.5:  # one coin per batch, as torchvision's RandomHorizontalFlip
            maps = maps.flip(-1)
        return self.layers(maps)


def discriminator_key(task: str, scale: int) -> str:
    """The ModuleDict key of one discriminator, e.g. "semseg_0" (the reference's naming)."""
    return f"{task}_{scale}"


class DomainDiscriminators(nn.ModuleDict):
    """One `OutputDiscriminator` per (task, output scale) pair, keyed "task_scale" (e.g. "semseg_0")."""

    def __init__(self, pairs: Iterable[tuple[str, int]], num_classes: int | None, width: int = 64) -> None:
        pairs = tuple(pairs)
        super().__init__({
            discriminator_key(task, scale): OutputDiscriminator(TASKS[task].out_channels(num_classes), width)
            for task, scale in pairs
        })
        self.pairs = pairs
