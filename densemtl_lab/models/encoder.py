"""The shared encoder: a torchvision ResNet with a dilated layer4 and five feature levels.

Implements the paper's shared encoder (the official `models/parts.py` and
`vendor/monodepth2/resnet_encoder.py`): the image is normalised the monodepth2 way, (x - 0.45) / 0.225,
and the network returns

| level | from              | stride | channels (18/34) | channels (50/101) |
|-------|-------------------|--------|------------------|-------------------|
| f0    | relu(bn1(conv1))  | 2      | 64               | 64                |
| f1    | layer1            | 4      | 64               | 256               |
| f2    | layer2            | 8      | 128              | 512               |
| f3    | layer3            | 16     | 256              | 1024              |
| f4    | layer4 (dilated)  | 16     | 512              | 2048              |

This module also holds `MultiTaskNetwork`, the small base class every model of the package shares:
the task tuple, the number of classes, the input check and the backbone/default parameter groups.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torchvision.models as tvm
from torchvision.models import WeightsEnum

from densemtl_lab.tasks import TASKS, parse_tasks

#: monodepth2's input normalisation, used by the reference instead of ImageNet's mean and std.
INPUT_MEAN = 0.45
INPUT_STD = 0.225
#: The encoder's output stride: image sides must be multiples of it.
OUTPUT_STRIDE = 16

WeightsSource = str | Path | None


class UnknownModelError(ValueError):
    """A model or backbone name that the package does not know."""


class EncoderWeightsError(ValueError):
    """Encoder weights that cannot be fetched, read or matched to the network."""


class InputSizeError(ValueError):
    """An input image whose shape the encoder cannot take."""


class TaskCountError(ValueError):
    """A model given a number of tasks it cannot serve."""


@dataclass(frozen=True)
class BackboneSpec:
    """A torchvision ResNet builder, its ImageNet weights and its block type."""

    builder: Callable[..., tvm.ResNet]
    imagenet: WeightsEnum
    bottleneck: bool

    @property
    def channels(self) -> tuple[int, int, int, int, int]:
        """Channels of the five feature levels f0..f4."""
        expansion = 4 if self.bottleneck else 1
        return (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, bottleneck=False),
    "resnet34": BackboneSpec(tvm.resnet34, tvm.ResNet34_Weights.IMAGENET1K_V1, bottleneck=False),
    "resnet50": BackboneSpec(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, bottleneck=True),
    "resnet101": BackboneSpec(tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1, bottleneck=True),
}


def backbone_spec(backbone: str) -> BackboneSpec:
    """The spec of a backbone name, or UnknownModelError listing the valid names."""
    if backbone not in BACKBONES:
        raise UnknownModelError(
            f"unknown backbone={backbone!r}; choose one of {', '.join(BACKBONES)}"
        )
    return BACKBONES[backbone]


def check_image(image: torch.Tensor) -> None:
    """Raise InputSizeError unless `image` is [B, 3, H, W] with H and W multiples of 16."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise InputSizeError(
            f"image has shape {tuple(image.shape)}; the model takes an RGB batch [B, 3, H, W]"
        )
    height, width = image.shape[-2:]
    if height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
        fit = [max(OUTPUT_STRIDE, round(side / OUTPUT_STRIDE) * OUTPUT_STRIDE) for side in (height, width)]
        raise InputSizeError(
            f"image has shape {tuple(image.shape)}; H and W must be multiples of {OUTPUT_STRIDE} "
            f"(the encoder's output stride): resize or crop it, e.g. to {fit[0]}x{fit[1]}"
        )


def _dilate_basic_layer4(layer4: nn.Sequential) -> None:
    """Output stride 16 for ResNet-18/34, whose BasicBlock refuses replace_stride_with_dilation.

    layer4 loses its stride and every 3x3 conv in it is dilated by 2 (padding 2 keeps the size).
    torchvision's Bottleneck version keeps the first block's 3x3 at dilation 1; here all are 2.
    """
    first = layer4[0]
    first.conv1.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    for block in layer4:
        for conv in (block.conv1, block.conv2):
            conv.dilation = (2, 2)
            conv.padding = (2, 2)


def _imagenet_state_dict(backbone: str, spec: BackboneSpec) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights (from the torch hub cache or the network)."""
    try:
        return spec.imagenet.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as error:
        filename = spec.imagenet.url.rsplit("/", 1)[-1]
        raise EncoderWeightsError(
            f"weights='imagenet' for {backbone}: could not download {spec.imagenet.url} ({error}); "
            f"offline, fetch that file on a machine with network and pass weights='/path/to/{filename}' "
            f"or put it in {Path(torch.hub.get_dir()) / 'checkpoints'}"
        ) from error


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors read safely (weights_only) from a local file."""
    if not path.is_file():
        raise EncoderWeightsError(
            f"weights={str(path)!r} is not a file; pass None, 'imagenet' or the path of an existing .pth file"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unreadable or unsafe files
        raise EncoderWeightsError(f"weights file {str(path)!r} could not be read as a state dict: {error}") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderWeightsError(
            f"weights file {str(path)!r} does not hold a flat state dict of tensors; save "
            f"resnet.state_dict() (torchvision key names)"
        )
    return dict(state)


def resnet_state_dict(backbone: str, weights: str | Path) -> dict[str, torch.Tensor]:
    """The torchvision state dict of `backbone` that `weights` names: "imagenet" or a local file."""
    if weights == "imagenet":
        return _imagenet_state_dict(backbone, backbone_spec(backbone))
    return _file_state_dict(Path(weights))


def _summarise(keys: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(keys[:most])
    return shown + (f" (+{len(keys) - most} more)" if len(keys) > most else "")


class ResNetEncoder(nn.Module):
    """ResNet trunk (no avgpool/fc) with output stride 16, returning the five levels f0..f4 (docs/faithfulness.md).

    `weights`: None (random), "imagenet" (torchvision's weights API) or a path to a torchvision-style
    ResNet state dict (loaded with weights_only=True, strictly; the classifier's fc.* keys are ignored).
    """

    def __init__(self, backbone: str = "resnet18", weights: WeightsSource = None) -> None:
        super().__init__()
        spec = backbone_spec(backbone)
        dilation = {} if not spec.bottleneck else {"replace_stride_with_dilation": [False, False, True]}
        resnet = spec.builder(weights=None, **dilation)
        if not spec.bottleneck:
            _dilate_basic_layer4(resnet.layer4)
        self.backbone = backbone
        self.channels = spec.channels
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        if weights is not None:
            self.load_weights(weights)

    def load_weights(self, weights: str | Path) -> None:
        """Load "imagenet" or a local torchvision ResNet state dict into the trunk, strictly."""
        state = resnet_state_dict(self.backbone, weights)
        trunk = {key: value for key, value in state.items() if not key.startswith("fc.")}
        expected = self.state_dict()
        missing = sorted(set(expected) - set(trunk))
        unexpected = sorted(set(trunk) - set(expected))
        wrong_shape = sorted(k for k in set(expected) & set(trunk) if expected[k].shape != trunk[k].shape)
        if missing or unexpected or wrong_shape:
            raise EncoderWeightsError(
                f"weights={str(weights)!r} do not match a {self.backbone} trunk: "
                f"missing [{_summarise(missing)}], unexpected [{_summarise(unexpected)}], "
                f"wrong shape [{_summarise(wrong_shape)}]; pass weights saved from torchvision's {self.backbone}"
            )
        self.load_state_dict(trunk, strict=True)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image [B, 3, H, W] in [0, 1] -> [f0 (/2), f1 (/4), f2 (/8), f3 (/16), f4 (/16)]."""
        check_image(image)
        x = (image - INPUT_MEAN) / INPUT_STD
        f0 = self.relu(self.bn1(self.conv1(x)))  # B, 64, H/2, W/2
        f1 = self.layer1(self.maxpool(f0))  # B, C1, H/4, W/4
        f2 = self.layer2(f1)  # B, C2, H/8, W/8
        f3 = self.layer3(f2)  # B, C3, H/16, W/16
        f4 = self.layer4(f3)  # B, C4, H/16, W/16 (dilated)
        return [f0, f1, f2, f3, f4]


class MultiTaskNetwork(nn.Module):
    """Base of every model here: a shared ResNetEncoder plus per-task modules.

    Gives the trainer `tasks` (canonical order), `num_classes` and `parameter_groups()`. Subclasses
    that predict exactly one task set `single_task = True`.
    """

    single_task = False

    def __init__(
        self, tasks: str | Sequence[str], num_classes: int, backbone: str, weights: WeightsSource
    ) -> None:
        super().__init__()
        self.tasks = parse_tasks(tasks)
        if self.single_task and len(self.tasks) != 1:
            raise TaskCountError(
                f"{type(self).__name__} predicts one task, got tasks={self.tasks}; build one per task "
                f"or use the 'mtl' model"
            )
        classes = [task for task in self.tasks if TASKS[task].predicts_classes]
        if classes and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes={num_classes!r}; {', '.join(classes)} needs a positive number of classes")
        self.num_classes = num_classes
        self.encoder = ResNetEncoder(backbone, weights)

    def out_channels(self, task: str) -> int:
        """Channels of `task`'s raw prediction."""
        return TASKS[task].out_channels(self.num_classes)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"backbone": encoder parameters, "default": everything else} (the reference's `optim/param_groups.py`)."""
        backbone = list(self.encoder.parameters())
        in_backbone = {id(p) for p in backbone}
        return {"backbone": backbone, "default": [p for p in self.parameters() if id(p) not in in_backbone]}
