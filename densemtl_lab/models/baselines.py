"""The baselines DenseMTL is compared with, built from the same encoder and decoder parts.

From the official code's `models/multitask.py`, `models/padnet.py` and `models/padnetplus.py` (see
docs/faithfulness.md, "Baselines"):

- `SingleTaskNet` ("stl"): encoder + the DenseMTL U-Net decoder for one task, both scales.
- `DeepLabSingleTask` ("stl-deeplab"): the paper's STL, encoder + DeepLabv3 head (ASPP 12/24/36,
  256 ch, 3x3 conv + BN + ReLU, 1x1 out), bilinear x16; scale 0 only.
- `SharedEncoderMTL` ("mtl"): one decoder per task on the shared encoder, no exchange.
- `PADNet` ("padnet"): the MTL-survey PAD-Net on layer4 (Xu et al., CVPR 2018).
- `ThreeWaysMTL` ("3ways"): the DenseMTL decoders with PAD-Net distillation after level 2 (H/4),
  the reference's "padnet+" (3-Ways, Hoyer et al., CVPR 2021).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import Bottleneck

from densemtl_lab.models.decoder import DecoderConfig, TaskDecoder, build_aspp, head_in_float32
from densemtl_lab.models.encoder import MultiTaskNetwork, WeightsSource
from densemtl_lab.models.mteb import pair_name
from densemtl_lab.models.xtam import SelfAttentionBranch

#: What every model returns: {task: {scale: raw prediction}}, scale 0 = H x W, 1 = H/2 x W/2.
Outputs = dict[str, dict[int, torch.Tensor]]

#: The reference STL head's ASPP rates (MTL-survey DeepLabHead).
DEEPLAB_ASPP_RATES = (12, 24, 36)
#: 3-Ways distils after these decoder levels (to H/4), then runs level 1 and 0.
THREE_WAYS_FIRST_SECTION = (4, 3, 2)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SharedEncoderMTL(MultiTaskNetwork):
    """Shared encoder + one DenseMTL decoder per task, no exchange ("mtl")."""

    def __init__(self, tasks: str | Sequence[str], num_classes: int = 19, backbone: str = "resnet18",
                 weights: WeightsSource = None, decoder: DecoderConfig = DecoderConfig()) -> None:
        super().__init__(tasks, num_classes, backbone, weights)
        self.decoders = nn.ModuleDict(
            {t: TaskDecoder(self.encoder.channels, self.out_channels(t), decoder) for t in self.tasks}
        )
        self._add_exchange(decoder)

    def _add_exchange(self, decoder: DecoderConfig) -> None:
        """Where a subclass with the same arguments adds its modules between the decoders (MTL: none)."""

    def forward(self, image: torch.Tensor) -> Outputs:
        """image [B, 3, H, W] -> {task: {0: [B, c, H, W], 1: [B, c, H/2, W/2]}}."""
        features = self.encoder(image)
        return {task: decoder(features) for task, decoder in self.decoders.items()}


class SingleTaskNet(SharedEncoderMTL):
    """Encoder + the DenseMTL decoder for exactly one task, both scales ("stl")."""

    single_task = True


def deeplab_head(in_channels: int, out_channels: int, channels: int = 256, dropout: float = 0.5) -> nn.Sequential:
    """MTL-survey DeepLabv3 head: ASPP (12/24/36) -> 3x3 conv + BN + ReLU -> 1x1 conv."""
    return nn.Sequential(
        build_aspp(in_channels, channels, DEEPLAB_ASPP_RATES, dropout),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, out_channels, 1),
    )


class DeepLabSingleTask(MultiTaskNetwork):
    """The paper's single-task baseline ("stl-deeplab"): DeepLabv3 head, bilinear x16, scale 0."""

    single_task = True

    def __init__(self, tasks: str | Sequence[str], num_classes: int = 19, backbone: str = "resnet18",
                 weights: WeightsSource = None, channels: int = 256, dropout: float = 0.5) -> None:
        super().__init__(tasks, num_classes, backbone, weights)
        self.head = deeplab_head(self.encoder.channels[4], self.out_channels(self.tasks[0]), channels, dropout)

    def forward(self, image: torch.Tensor) -> Outputs:
        """image [B, 3, H, W] -> {task: {0: [B, c, H, W]}}."""
        logits = self.head(self.encoder(image)[4])  # B, c, H/16, W/16
        return {self.tasks[0]: {0: _resize(logits, image.shape[-2:])}}


class CrossTaskDistillation(nn.Module):
    """PAD-Net's multi-modal distillation (Xu et al., CVPR 2018): f~_t = f_t + sum_{s != t} SA_{t<-s}(f_s).

    With one task there is nothing to distil and the features pass unchanged.
    """

    def __init__(self, tasks: Sequence[str], channels: int) -> None:
        super().__init__()
        self.pairs = tuple((t, s) for t in tasks for s in tasks if s != t)
        self.gates = nn.ModuleDict({pair_name(t, s): SelfAttentionBranch(channels, channels) for t, s in self.pairs})

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        distilled = dict(features)
        for target, source in self.pairs:
            distilled[target] = distilled[target] + self.gates[pair_name(target, source)](features[source])
        return distilled


def _bottlenecks(in_channels: int, channels: int) -> nn.Sequential:
    """Two torchvision Bottlenecks to `channels` (a 1x1 conv + BN shortcut when the width changes)."""
    shortcut = None
    if in_channels != channels:
        shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
    return nn.Sequential(
        Bottleneck(in_channels, channels // 4, downsample=shortcut), Bottleneck(channels, channels // 4)
    )


class PADNet(MultiTaskNetwork):
    """PAD-Net, MTL-survey version on layer4 ("padnet").

    Per task two Bottlenecks + 1x1 conv give the initial predictions, SA-gated cross-task residual
    distillation refines the features, then two Bottlenecks + 1x1 conv give the final ones. Both sit
    at stride 16. Choice: the initial predictions are returned as scale 1, resized bilinearly to
    H/2 (the reference returns them at H/16 and its loss resizes to the label); the final ones as
    scale 0, resized to H, as in the reference.
    """

    def __init__(self, tasks: str | Sequence[str], num_classes: int = 19, backbone: str = "resnet18",
                 weights: WeightsSource = None, channels: int = 256) -> None:
        super().__init__(tasks, num_classes, backbone, weights)
        if channels < 4 or channels % 4:
            raise ValueError(f"padnet_channels={channels}; give a multiple of 4 (Bottleneck expansion)")
        bottom = self.encoder.channels[4]
        self.initial = nn.ModuleDict({t: _bottlenecks(bottom, channels) for t in self.tasks})
        self.initial_heads = nn.ModuleDict({t: nn.Conv2d(channels, self.out_channels(t), 1) for t in self.tasks})
        self.distillation = CrossTaskDistillation(self.tasks, channels)
        self.final = nn.ModuleDict(
            {t: nn.Sequential(*_bottlenecks(channels, channels), nn.Conv2d(channels, self.out_channels(t), 1))
             for t in self.tasks}
        )

    def forward(self, image: torch.Tensor) -> Outputs:
        """image [B, 3, H, W] -> {task: {0: [B, c, H, W], 1: [B, c, H/2, W/2]}}."""
        bottom = self.encoder(image)[4]  # B, C4, H/16, W/16
        task_features = {t: self.initial[t](bottom) for t in self.tasks}  # B, ch, H/16, W/16
        distilled = self.distillation(task_features)
        height, width = image.shape[-2:]
        return {
            t: {
                0: _resize(head_in_float32(self.final[t][-1], self.final[t][:-1](distilled[t])), (height, width)),
                1: _resize(head_in_float32(self.initial_heads[t], task_features[t]), (height // 2, width // 2)),
            }
            for t in self.tasks
        }


class ThreeWaysMTL(SharedEncoderMTL):
    """DenseMTL decoders with PAD-Net distillation after level 2 ("3ways", the reference's padnet+)."""

    def _add_exchange(self, decoder: DecoderConfig) -> None:
        """PAD-Net distillation between the tasks' H/4 features (decoder width w2)."""
        self.distillation = CrossTaskDistillation(self.tasks, decoder.widths[2])

    def forward(self, image: torch.Tensor) -> Outputs:
        """image [B, 3, H, W] -> {task: {0: [B, c, H, W], 1: [B, c, H/2, W/2]}}."""
        features = self.encoder(image)
        quarter = {t: d.run(THREE_WAYS_FIRST_SECTION, features) for t, d in self.decoders.items()}  # B, w2, H/4, W/4
        distilled = self.distillation(quarter)
        return {t: d(features, distilled[t], start_level=1) for t, d in self.decoders.items()}
