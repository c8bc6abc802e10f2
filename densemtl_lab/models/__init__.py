"""DenseMTL and its baselines, and `build_model`, one dictionary from model names to builders.

    from densemtl_lab.models import build_model
    model = build_model("densemtl", "SDN", backbone="resnet101", num_classes=16)
    outputs = model(image)                     # {task: {0: [B,c,H,W], 1: [B,c,H/2,W/2]}}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from densemtl_lab.config import MODEL_NAMES  # the one list of model names (configs load without torch)
from densemtl_lab.models.baselines import (
    DeepLabSingleTask,
    PADNet,
    SharedEncoderMTL,
    SingleTaskNet,
    ThreeWaysMTL,
)
from densemtl_lab.models.decoder import PAPER_WIDTHS, DecoderConfig, TaskDecoder
from densemtl_lab.models.densemtl import DenseMTL, HalfResolutionFeatures
from densemtl_lab.models.encoder import (
    BACKBONES,
    EncoderWeightsError,
    InputSizeError,
    MultiTaskNetwork,
    ResNetEncoder,
    TaskCountError,
    UnknownModelError,
    WeightsSource,
    backbone_spec,
)
from densemtl_lab.models.mteb import EXCHANGE_MODES, MultiTaskExchangeBlock
from densemtl_lab.models.xtam import XTAM, PairInspection, XTAMConfig
from densemtl_lab.tasks.depth import code_from_disparity


class UnknownOptionError(ValueError):
    """A build_model option that the chosen model does not take."""


def _with_decoder(model_class: type[SharedEncoderMTL]) -> Callable[..., SharedEncoderMTL]:
    """Builder for a model made of the encoder and the U-Net decoders (stl, mtl, 3ways)."""

    def build(tasks, num_classes, backbone, weights, decoder_widths, aspp_channels=None, dropout=0.5):
        decoder = DecoderConfig(decoder_widths, aspp_channels, dropout)
        return model_class(tasks, num_classes, backbone, weights, decoder)

    return build


def _stl_deeplab(tasks, num_classes, backbone, weights, decoder_widths, aspp_channels=None, dropout=0.5):
    # The DeepLab head has no U-Net: decoder_widths does not apply; aspp_channels is its width.
    return DeepLabSingleTask(tasks, num_classes, backbone, weights, aspp_channels or 256, dropout)


def _padnet(tasks, num_classes, backbone, weights, decoder_widths, padnet_channels=256):
    # PAD-Net has no U-Net decoder: decoder_widths does not apply.
    return PADNet(tasks, num_classes, backbone, weights, padnet_channels)


def _densemtl(
    tasks, num_classes, backbone, weights, decoder_widths, aspp_channels=None, dropout=0.5,
    xtam_ds=4, self_attention=True, correlation=True, alpha=True, full_sa=False, exchange_mode="add",
):
    return DenseMTL(
        tasks, num_classes, backbone, weights,
        DecoderConfig(decoder_widths, aspp_channels, dropout),
        XTAMConfig(xtam_ds, self_attention, correlation, alpha, full_sa),
        exchange_mode,
    )


#: Model name (each of config.MODEL_NAMES) -> builder(tasks, num_classes, backbone, weights, decoder_widths,
#: **options).
BUILDERS: dict[str, Callable[..., MultiTaskNetwork]] = {
    "stl": _with_decoder(SingleTaskNet),
    "stl-deeplab": _stl_deeplab,
    "mtl": _with_decoder(SharedEncoderMTL),
    "padnet": _padnet,
    "3ways": _with_decoder(ThreeWaysMTL),
    "densemtl": _densemtl,
}
_COMMON = ("tasks", "num_classes", "backbone", "weights", "decoder_widths")


def model_options(name: str) -> dict[str, object]:
    """The options `name` takes beyond the common arguments, with their defaults."""
    if name not in BUILDERS:
        raise UnknownModelError(f"unknown model name={name!r}; choose one of {', '.join(MODEL_NAMES)}")
    parameters = inspect.signature(BUILDERS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in _COMMON}


def build_model(
    name: str,
    tasks: str | Sequence[str],
    backbone: str = "resnet18",
    num_classes: int = 19,
    weights: WeightsSource = None,
    decoder_widths: Sequence[int] = PAPER_WIDTHS,
    depth_output: str = "code",
    **options: object,
) -> MultiTaskNetwork:
    """Build model `name` (one of MODEL_NAMES) for `tasks` ("SDN", ["semseg", "depth"], ...).

    Options by model (see `model_options`): aspp_channels, dropout (all but padnet); padnet_channels
    (padnet); xtam_ds, self_attention, correlation, alpha, full_sa, exchange_mode (densemtl).
    `depth_output="disparity"` makes the depth head a sigmoid disparity (self-supervised depth): a forward
    hook turns it into the depth coding that every depth output uses (`tasks.depth.code_from_disparity`).
    """
    if depth_output not in ("code", "disparity"):
        raise UnknownOptionError(f"depth_output={depth_output!r}; use 'code' or 'disparity'")
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnknownOptionError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(accepted) or 'none'}"
        )
    backbone_spec(backbone)
    model = BUILDERS[name](tasks, num_classes, backbone, weights, tuple(decoder_widths), **options)
    model.depth_output = depth_output
    if depth_output == "disparity":
        model.register_forward_hook(_depth_from_disparity)
    return model


def _depth_from_disparity(model: nn.Module, inputs: object, outputs: dict) -> dict:
    """Forward hook of a disparity-headed model: its depth outputs, sigmoid disparities, in the depth coding."""
    if "depth" in outputs:
        outputs["depth"] = {scale: code_from_disparity(torch.sigmoid(raw)) for scale, raw in outputs["depth"].items()}
    return outputs


__all__ = [
    "BACKBONES", "BUILDERS", "EXCHANGE_MODES", "MODEL_NAMES", "PAPER_WIDTHS", "XTAM",
    "DecoderConfig", "DeepLabSingleTask", "DenseMTL", "EncoderWeightsError", "HalfResolutionFeatures",
    "InputSizeError", "MultiTaskExchangeBlock", "MultiTaskNetwork", "PADNet", "PairInspection",
    "ResNetEncoder", "SharedEncoderMTL", "SingleTaskNet", "TaskCountError", "TaskDecoder", "ThreeWaysMTL",
    "UnknownModelError", "UnknownOptionError", "XTAMConfig", "build_model", "model_options",
]
