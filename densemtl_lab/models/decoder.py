"""One task's decoder: ASPP on the last encoder level, then a U-Net back to full resolution.

Implements the paper's task decoder (the official `vendor/monodepth2/decoder.py`, the monodepth2 / 3-Ways
DecoderHead with `intermediate_aspp`). Level i (4..0) runs conv0, a x2 nearest upsampling (levels
3..0; level 4 needs none because f4 and f3 are both at stride 16), concatenates the encoder skip
f_{i-1} (levels 4..1) and runs conv1. With widths w (indexed by level) and encoder channels c:

| level | conv0                  | skip | conv1                 | output           |
|-------|------------------------|------|-----------------------|------------------|
| 4     | ASPP c4 -> a (=w4)     | f3   | a + c3 -> w4          | w4, H/16         |
| 3     | w4 -> w3               | f2   | w3 + c2 -> w3         | w3, H/8          |
| 2     | w3 -> w2               | f1   | w2 + c1 -> w2         | w2, H/4          |
| 1     | w2 -> w1               | f0   | w1 + c0 -> w1         | w1, H/2 (head 1) |
| 0     | w1 -> w0               | -    | w0 -> w0              | w0, H   (head 0) |

The decoder runs in sections (`HALF_SECTION` then `FULL_SECTION`) so that DenseMTL can refine the
H/2 feature between them. Heads are 1x1 convs with bias; outputs are raw (no activation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP

from densemtl_lab.models.activation import ELU

#: The paper's decoder widths, indexed by level 0..4.
PAPER_WIDTHS: tuple[int, int, int, int, int] = (64, 128, 128, 256, 256)
#: The decoder's ASPP rates (3-Ways / DenseMTL configs).
DECODER_ASPP_RATES = (6, 12, 18)
#: Decoder levels before the exchange (down to H/2) and after it (to H).
HALF_SECTION = (4, 3, 2, 1)
FULL_SECTION = (0,)
#: The scales that get a prediction head: 0 = H x W, 1 = H/2 x W/2.
HEAD_SCALES = (0, 1)


@dataclass(frozen=True)
class DecoderConfig:
    """Widths per level, the ASPP width (None = widths[4]) and the ASPP dropout."""

    widths: tuple[int, ...] = PAPER_WIDTHS
    aspp_channels: int | None = None
    dropout: float = 0.5

    def __post_init__(self) -> None:
        widths = tuple(self.widths)
        if len(widths) != 5 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(
                f"decoder_widths={self.widths!r}; give five positive ints indexed by level 0..4, "
                f"e.g. {PAPER_WIDTHS}"
            )
        object.__setattr__(self, "widths", widths)
        if self.aspp_channels is not None and (not isinstance(self.aspp_channels, int) or self.aspp_channels < 1):
            raise ValueError(f"aspp_channels={self.aspp_channels!r}; give a positive int or None (= widths[4])")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r}; give a probability in [0, 1)")

    @property
    def aspp_width(self) -> int:
        """Output channels of the ASPP."""
        return self.widths[4] if self.aspp_channels is None else self.aspp_channels


class AtrousConv2d(nn.Conv2d):
    """A 3x3 atrous conv (padding = dilation, stride 1) that skips the taps which read only zero padding.

    With dilation d, the taps at offset ±d of an output row read rows outside the input whenever
    d >= the input's height (likewise columns and width): their products are all zero. The ASPP sees
    the image at 1/16 (8x16 at 128x256, 4x8 at 64x128), so its rates 6-18 often leave only the centre
    row, column or tap; the conv then runs on those alone. Outputs and gradients are the same sums
    without their zero terms (the skipped taps' weight gradient is zero either way); the parameter
    keeps its 3x3 shape. docs/faithfulness.md lists it.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        if not (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == conv.dilation
                and conv.groups == 1 and conv.padding_mode == "zeros"):
            raise ValueError(f"AtrousConv2d takes a 3x3, stride-1 conv with padding = dilation, got {conv}")
        # Built on the meta device (no initialisation, so the seeded RNG stream is untouched), then
        # given `conv`'s own parameters.
        super().__init__(conv.in_channels, conv.out_channels, 3, padding=conv.padding, dilation=conv.dilation,
                         bias=conv.bias is not None, device="meta")
        self.load_state_dict(conv.state_dict(), assign=True)

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        height, width = input.shape[-2:]
        dead_rows, dead_columns = self.dilation[0] >= height, self.dilation[1] >= width
        if not (dead_rows or dead_columns):
            return super()._conv_forward(input, weight, bias)
        rows, columns = slice(1, 2) if dead_rows else slice(None), slice(1, 2) if dead_columns else slice(None)
        padding = (0 if dead_rows else self.padding[0], 0 if dead_columns else self.padding[1])
        return F.conv2d(input, weight[:, :, rows, columns], bias, 1, padding, self.dilation)


def build_aspp(in_channels: int, out_channels: int, rates: Sequence[int], dropout: float) -> ASPP:
    """DeepLabv3 ASPP (torchvision): 1x1 + three atrous 3x3 + image pooling, each conv+BN+ReLU,
    concatenated, then 1x1 conv + BN + ReLU + Dropout(`dropout`). The atrous convs are
    `AtrousConv2d`s (the same function, without the taps that read only padding)."""
    aspp = ASPP(in_channels, list(rates), out_channels)
    aspp.project[-1] = nn.Dropout(dropout)
    for branch in aspp.convs[1:len(rates) + 1]:
        branch[0] = AtrousConv2d(branch[0])
    return aspp


class ConvBlock(nn.Sequential):
    """monodepth2's block: reflection pad 1, 3x3 conv with bias, ELU (no BatchNorm; `activation.ELU`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3), ELU()
        )


class DecoderLevel(nn.Module):
    """One U-Net level: conv0, optional x2 nearest upsampling, optional skip concat, conv1."""

    def __init__(self, conv0: nn.Module, conv1: nn.Module, upsample: bool) -> None:
        super().__init__()
        self.conv0 = conv0
        self.conv1 = conv1
        self.upsample = upsample

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.conv0(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")  # B, C, 2h, 2w
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # B, C + C_skip, h, w
        return self.conv1(x)


def head_in_float32(head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`head(x)` in float32 even under autocast (a cheap 1x1 conv).

    A bf16 output keeps 8 significant bits: the depth code 65536 / (100 z + 1) would move in steps of
    about 0.3 m at 60 m, and the metrics and losses would see them. The reference trains in float32.
    """
    with torch.autocast(x.device.type, enabled=False):
        return head(x.float())


class TaskDecoder(nn.Module):
    """ASPP + U-Net decoder of one task with 1x1 heads at H/2 (scale 1) and H (scale 0) (docs/faithfulness.md)."""

    def __init__(
        self, encoder_channels: Sequence[int], out_channels: int, config: DecoderConfig = DecoderConfig()
    ) -> None:
        super().__init__()
        widths = config.widths
        levels = []
        for level in range(5):
            if level == 4:
                conv0: nn.Module = build_aspp(
                    encoder_channels[4], config.aspp_width, DECODER_ASPP_RATES, config.dropout
                )
                conv0_width = config.aspp_width
            else:
                conv0 = ConvBlock(widths[level + 1], widths[level])
                conv0_width = widths[level]
            skip_width = encoder_channels[level - 1] if level > 0 else 0
            conv1 = ConvBlock(conv0_width + skip_width, widths[level])
            levels.append(DecoderLevel(conv0, conv1, upsample=level < 4))
        self.levels = nn.ModuleList(levels)
        self.heads = nn.ModuleDict(
            {str(scale): nn.Conv2d(widths[scale], out_channels, 1) for scale in HEAD_SCALES}
        )

    def run(
        self, levels: Sequence[int], features: Sequence[torch.Tensor], x: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Run `levels` (descending) on the encoder `features`; x=None starts from f4 at level 4."""
        if x is None:
            if levels[0] != 4:
                raise ValueError(f"levels={tuple(levels)} starts below 4; pass the previous level's output x")
            x = features[4]
        for level in levels:
            skip = features[level - 1] if level > 0 else None
            x = self.levels[level](x, skip)
        return x

    def predict(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """The raw prediction of the head at `scale` (0: from level 0, 1: from level 1), in float32."""
        return head_in_float32(self.heads[str(scale)], x)

    def forward(
        self, features: Sequence[torch.Tensor], x: torch.Tensor | None = None, start_level: int = 4
    ) -> dict[int, torch.Tensor]:
        """Levels `start_level`..0 with both heads: {0: [B, out, H, W], 1: [B, out, H/2, W/2]}.

        By default the whole decoder from f4; a model that changes the features between levels passes
        its own `x` (the output of level start_level + 1).
        """
        if not 1 <= start_level <= 4:
            raise ValueError(f"start_level={start_level}; give 1..4 (level 1 carries the H/2 head)")
        half = self.run(range(start_level, 0, -1), features, x)  # B, w1, H/2, W/2
        full = self.run(FULL_SECTION, features, half)  # B, w0, H, W
        return {0: self.predict(full, 0), 1: self.predict(half, 1)}
