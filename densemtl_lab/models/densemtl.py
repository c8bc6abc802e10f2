"""DenseMTL: a shared encoder, one decoder per task, and the mTEB exchange at H/2.

Implements the paper's full model (DenseMTL, WACV 2023, method section; the official `models/ours_xatt.py`):

    image -> ResNetEncoder -> per task: decoder levels 4..1 -> f_i at H/2 -> head -> scale 1
                                       mTEB({f_i}) -> f~_i -> decoder level 0 -> head -> scale 0

The scale-1 prediction comes from the features *before* the exchange and is supervised as well
(deep supervision); it is not fed back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from densemtl_lab.models.baselines import Outputs, SharedEncoderMTL
from densemtl_lab.models.decoder import FULL_SECTION, HALF_SECTION, DecoderConfig
from densemtl_lab.models.encoder import WeightsSource
from densemtl_lab.models.mteb import MultiTaskExchangeBlock
from densemtl_lab.models.xtam import PairInspection, XTAMConfig

@dataclass
class HalfResolutionFeatures:
    """Per-task decoder features at H/2 [B, C, H/2, W/2], before and after the exchange."""

    before: dict[str, torch.Tensor]
    after: dict[str, torch.Tensor]


class DenseMTL(SharedEncoderMTL):
    """The shared-encoder MTL network plus the mTEB exchange between its decoder sections.

    Returns {task: {0: [B, c, H, W], 1: [B, c, H/2, W/2]}}.
    """

    def __init__(self, tasks: str | Sequence[str], num_classes: int = 19, backbone: str = "resnet18",
                 weights: WeightsSource = None, decoder: DecoderConfig = DecoderConfig(),
                 xtam: XTAMConfig = XTAMConfig(), exchange_mode: str = "add") -> None:
        super().__init__(tasks, num_classes, backbone, weights, decoder)
        self.exchange = MultiTaskExchangeBlock(self.tasks, decoder.widths[1], xtam, exchange_mode)

    def forward(
        self, image: torch.Tensor, return_attention: bool = False
    ) -> Outputs | tuple[Outputs, dict[tuple[str, str], PairInspection]]:
        """image [B, 3, H, W] in [0, 1] -> outputs; with `return_attention`, (outputs, inspection)
        where inspection[(target, source)] holds that xTAM's attention maps (inspectable path)."""
        features, half = self._encode_to_half(image)
        if return_attention:
            refined, inspection = self.exchange.inspect(half)
        else:
            refined = self.exchange(half)
        outputs = {}
        for task, decoder in self.decoders.items():
            full = decoder.run(FULL_SECTION, features, refined[task])  # B, w0, H, W
            outputs[task] = {0: decoder.predict(full, 0), 1: decoder.predict(half[task], 1)}
        return (outputs, inspection) if return_attention else outputs

    def features_half(self, image: torch.Tensor) -> HalfResolutionFeatures:
        """The per-task H/2 features before and after the mTEB exchange (for the notebooks)."""
        _, half = self._encode_to_half(image)
        return HalfResolutionFeatures(before=half, after=self.exchange(half))

    def _encode_to_half(self, image: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        features = self.encoder(image)
        half = {t: decoder.run(HALF_SECTION, features) for t, decoder in self.decoders.items()}  # B, w1, H/2, W/2
        return features, half
