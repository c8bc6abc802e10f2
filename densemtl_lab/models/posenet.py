"""The pose network of self-supervised depth: a ResNet-18 on two stacked frames and Monodepth2's pose decoder.

Reference (github.com/astra-vision/DenseMTL): `models/posenet.py` (`PoseNetwork` with
`pose_model_input='pairs'`), `vendor/monodepth2/resnet_encoder.py` (a ResNet whose first convolution takes
both frames, its ImageNet kernel repeated per frame and divided by their number),
`vendor/monodepth2/pose_decoder.py` (`PoseDecoder`) and `vendor/monodepth2/layers.py`
(`transformation_from_parameters`). For each neighbour the two frames go in temporal order (the
earlier first); the decoder's first 6-vector, scaled by 0.01, is an axis-angle rotation and a
translation, and the transform is inverted when the neighbour comes before frame 0, so that every
pose is T_{s<-0}: frame 0's camera coordinates to the neighbour's (the warp's `source_from_target`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torchvision.models as tvm
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

from densemtl_lab.models.encoder import INPUT_MEAN, INPUT_STD, resnet_state_dict

#: The frames the decoder predicts for per pass (the reference's `num_frames_to_predict_for=2`; the
#: first is used) and the scale of its outputs.
PREDICTED_FRAMES = 2
OUTPUT_SCALE = 0.01


def transformation_from_parameters(axis_angle: torch.Tensor, translation: torch.Tensor,
                                   invert: bool = False) -> torch.Tensor:
    """[B, 4, 4] from an axis-angle rotation and a translation (both [B, 3]): T(t) R, or R^T T(-t) inverted."""
    rotation = axis_angle_to_rotation_matrix(axis_angle)
    transform = torch.eye(4, dtype=axis_angle.dtype, device=axis_angle.device).repeat(axis_angle.shape[0], 1, 1)
    if invert:
        transform[:, :3, :3] = rotation.transpose(1, 2)
        transform[:, :3, 3] = -(rotation.transpose(1, 2) @ translation.unsqueeze(-1)).squeeze(-1)
    else:
        transform[:, :3, :3] = rotation
        transform[:, :3, 3] = translation
    return transform


class PoseNetwork(nn.Module):
    """Relative camera poses between frame 0 and its neighbours, from pairs of frames in [0, 1].

    `weights`: None (random), "imagenet" or the path of a torchvision ResNet-18 state dict; the first
    convolution gets the ImageNet kernel once per frame, halved (the reference's `pretrained=True`).
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        resnet = tvm.resnet18(weights=None)
        resnet.conv1 = nn.Conv2d(6, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
        resnet.fc = nn.Identity()
        if weights is not None:
            state = {key: value for key, value in resnet_state_dict("resnet18", weights).items()
                     if not key.startswith("fc.")}
            state["conv1.weight"] = torch.cat([state["conv1.weight"]] * 2, 1) / 2
            resnet.load_state_dict(state, strict=True)
        self.encoder = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                     resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.decoder = nn.Sequential(
            nn.Conv2d(512, 256, 1), nn.ReLU(),  # squeeze
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(256, 6 * PREDICTED_FRAMES, 1))

    def forward(self, earlier: torch.Tensor, later: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two frames [B, 3, H, W] in temporal order -> (axis-angle [B, 3], translation [B, 3])."""
        pair = (torch.cat([earlier, later], 1) - INPUT_MEAN) / INPUT_STD
        out = self.decoder(self.encoder(pair)).mean((2, 3))
        out = OUTPUT_SCALE * out.view(-1, PREDICTED_FRAMES, 6)
        return out[:, 0, :3], out[:, 0, 3:]

    def relative_poses(self, image: torch.Tensor, sources: torch.Tensor, frame_ids: Sequence[int]) -> torch.Tensor:
        """T_{s<-0} [B, S, 4, 4] of each source (sources [B, S, 3, H, W], frame ids such as (-1, 1)), in float32."""
        poses = []
        for index, frame in enumerate(frame_ids):
            source = sources[:, index]
            pair = (source, image) if frame < 0 else (image, source)
            axis_angle, translation = self(*pair)
            poses.append(transformation_from_parameters(axis_angle.float(), translation.float(), invert=frame < 0))
        return torch.stack(poses, 1)
