"""View synthesis and the photometric loss of self-supervised depth, as the reference's Monodepth2 code has them.

Self-supervised depth (the semi-supervised depth setting, SDE) learns depth from video: a neighbouring
frame, warped into frame 0 by the predicted depth, the intrinsics and the relative pose, should look
like frame 0. The loss compares the two with SSIM and L1, keeps per pixel the best source, and lets
the unwarped sources compete (the auto-mask: pixels that a static camera would explain as well are
not learnt from). Reference: github.com/astra-vision/DenseMTL, `vendor/monodepth2/layers.py`
(`disp_to_depth`, `SSIM`, `BackprojectDepth`, `Project3D`, `get_smooth_loss`) and
`vendor/monodepth2/loss.py` (`MonodepthLoss`); `bench/compare_monodepth2_loss.py` runs both on the same
inputs. The geometry (back-projection, rigid transform, projection) is kornia's; SSIM is written out,
because kornia's is Gaussian-windowed and the reference's is a 3x3 box (docs/faithfulness.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.geometry.camera.perspective import project_points
from kornia.geometry.conversions import normalize_pixel_coordinates
from kornia.geometry.depth import depth_to_3d_v2
from kornia.geometry.linalg import transform_points

from densemtl_lab.models.posenet import PoseNetwork
from densemtl_lab.tasks.depth import (
    DISPARITY_MAX_DEPTH_M, DISPARITY_MIN_DEPTH_M, disparity_from_code, disparity_to_depth,
)

#: The reference's SSIM constants (for images in [0, 1]) and the SSIM share of the photometric error.
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2
SSIM_WEIGHT = 0.85


def pixel_index_intrinsics(K: torch.Tensor) -> torch.Tensor:
    """Intrinsics for pixels indexed by their integer coordinates (kornia's and the reference's warping).

    Our data contract puts pixel (u, v)'s centre at (u + 0.5, v + 0.5) (data/geometry.py); the warp
    samples the image at integer grid points, so the principal point moves by half a pixel."""
    shifted = K.clone()
    shifted[..., 0, 2] -= 0.5
    shifted[..., 1, 2] -= 0.5
    return shifted


def project_into_source(depth: torch.Tensor, K: torch.Tensor, source_from_target: torch.Tensor) -> torch.Tensor:
    """Where each target pixel lands in the source frame: pixel coordinates [B, H, W, 2] (x, y).

    depth [B, 1, H, W] (the target's metric z-depth), K [B, 3, 3] (data-contract intrinsics),
    source_from_target [B, 4, 4] (T_{s<-t}: target camera coordinates to the source camera's)."""
    K = pixel_index_intrinsics(K.to(depth.dtype))
    points = depth_to_3d_v2(depth[:, 0], K)  # B, H, W, 3
    moved = transform_points(source_from_target.to(depth.dtype)[:, None], points)
    return project_points(moved, K[:, None, None])


def warp_to_target(source: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                   source_from_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source image [B, C, H, W] seen from the target camera: (warped [B, C, H, W], inside [B, 1, H, W]).

    Bilinear, with the border repeated outside the source (the reference's `padding_mode='border'`);
    `inside` marks the pixels whose sample point lies within the source image."""
    height, width = depth.shape[-2:]
    with torch.autocast(depth.device.type, enabled=False):  # geometry in fp32 under bf16/fp16 autocast
        pixels = project_into_source(depth.float(), K.float(), source_from_target.float())
        grid = normalize_pixel_coordinates(pixels, height, width)
        warped = F.grid_sample(source.float(), grid, padding_mode="border", align_corners=True)
    inside = ((grid.abs() <= 1).all(dim=-1)).unsqueeze(1)
    return warped, inside


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel and channel, clamped to [0, 1]: 3x3 box statistics of reflection-padded images."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mean_x, mean_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    var_x = F.avg_pool2d(x * x, 3, 1) - mean_x ** 2
    var_y = F.avg_pool2d(y * y, 3, 1) - mean_y ** 2
    covariance = F.avg_pool2d(x * y, 3, 1) - mean_x * mean_y
    numerator = (2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_x ** 2 + mean_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return torch.clamp((1 - numerator / denominator) / 2, 0, 1)


def photometric_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.85 (1 - SSIM) / 2 + 0.15 |prediction - target|, each averaged over channels: [B, 1, H, W]."""
    l1 = (target - prediction).abs().mean(1, keepdim=True)
    return SSIM_WEIGHT * ssim_distance(prediction, target).mean(1, keepdim=True) + (1 - SSIM_WEIGHT) * l1


def edge_aware_smoothness(disparity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mean |gradient| of the mean-normalised disparity, damped by exp(-|image gradient|) (a scalar)."""
    disparity = disparity / (disparity.mean((2, 3), keepdim=True) + 1e-7)
    disparity_dx = (disparity[..., :, :-1] - disparity[..., :, 1:]).abs()
    disparity_dy = (disparity[..., :-1, :] - disparity[..., 1:, :]).abs()
    image_dx = (image[..., :, :-1] - image[..., :, 1:]).abs().mean(1, keepdim=True)
    image_dy = (image[..., :-1, :] - image[..., 1:, :]).abs().mean(1, keepdim=True)
    return (disparity_dx * torch.exp(-image_dx)).mean() + (disparity_dy * torch.exp(-image_dy)).mean()


def view_synthesis(image: torch.Tensor, sources: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                   source_poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each source [B, S, 3, H, W] warped into frame 0 by depth [B, 1, H, W] (metres), K [B, 3, 3] and
    T_{s<-0} [B, S, 4, 4], and its photometric error against `image`: ([B, S, 3, H, W], [B, S, H, W])."""
    warped = torch.stack([warp_to_target(sources[:, i], depth, K, source_poses[:, i])[0]
                          for i in range(sources.shape[1])], 1)
    errors = torch.cat([photometric_error(warped[:, i], image) for i in range(sources.shape[1])], 1)
    return warped, errors


@dataclass
class PhotometricLoss:
    """The loss of one batch and what the lesson draws: the loss (mean over scales), each scale's
    loss, the auto-mask at scale 0 ([B, 1, H, W], 1 where a warped source beat every unwarped one)
    and the sources warped at scale 0 ([B, S, 3, H, W])."""

    loss: torch.Tensor
    per_scale: list[torch.Tensor]
    automask: torch.Tensor | None
    warped: torch.Tensor


def photometric_loss(disparities: Mapping[int, torch.Tensor], image: torch.Tensor, sources: torch.Tensor,
                     K: torch.Tensor, source_poses: torch.Tensor, *, min_depth: float = DISPARITY_MIN_DEPTH_M,
                     max_depth: float = DISPARITY_MAX_DEPTH_M, smoothness: float = 1e-3, automask: bool = True,
                     generator: torch.Generator | None = None) -> PhotometricLoss:
    """Monodepth2's loss, as the reference's `MonodepthLoss.compute_losses` computes it.

    disparities: {scale s: the depth head's sigmoid output} (s = 0 first; at 1/2^s of the image or
    any size: each is resized bilinearly to the image for the warp, and the image is resized to it
    for the smoothness term); image [B, 3, H, W] (frame 0, in [0, 1]); sources [B, S, 3, H, W] (its
    neighbours); K [B, 3, 3]; source_poses [B, S, 4, 4] (T_{s<-0}). Per scale: the per-pixel minimum
    over sources of the photometric error (with the unwarped sources competing when `automask`; ties
    broken by N(0, 1e-5) noise drawn from `generator`, as the reference does), averaged, plus
    `smoothness` / 2^s times the edge-aware smoothness of that scale's disparity.
    """
    height, width = image.shape[-2:]
    num_sources = sources.shape[1]
    identity = torch.cat([photometric_error(sources[:, i], image) for i in range(num_sources)], 1) if automask else None
    per_scale, mask, warped_at_0 = [], None, None
    for scale, disparity in sorted(disparities.items()):
        full = F.interpolate(disparity, size=(height, width), mode="bilinear", align_corners=False)
        warped, errors = view_synthesis(image, sources, disparity_to_depth(full, min_depth, max_depth), K,
                                        source_poses)
        if identity is not None:
            noise = torch.randn(identity.shape, generator=generator, device=identity.device) * 1e-5
            errors = torch.cat([identity + noise, errors], 1)
        best, chosen = errors.min(dim=1) if errors.shape[1] > 1 else (errors[:, 0], None)
        if warped_at_0 is None:
            warped_at_0 = warped
            if identity is not None:
                mask = (chosen >= num_sources).unsqueeze(1).float()
        scaled_image = image if disparity.shape[-2:] == image.shape[-2:] else F.interpolate(
            image, size=disparity.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
        smooth = edge_aware_smoothness(disparity, scaled_image)
        per_scale.append(best.mean() + smoothness * smooth / 2 ** scale)
    return PhotometricLoss(torch.stack(per_scale).mean(), per_scale, mask, warped_at_0)


class ViewSynthesisLoss(nn.Module):
    """The photometric depth loss inside a multi-task criterion (`train.depth_loss=photometric`).

    Holds the pose network (its own optimiser group, `optim.pose_lr`), or, with `pose_source="dataset"`,
    none: the batch's true poses (`poses`, T_{s<-0}; toy sequences) stand in for it, a lesson setting
    that learns depth alone. Called with the depth outputs {scale: coded depth} of a disparity-headed model
    and the batch of a sequence dataset (`image`, `frames` [B, S, 3, H, W], `frame_ids`, `K`), it returns
    the loss; it never reads a depth label.
    """

    def __init__(self, pose_weights: str | None = None, pose_source: str = "network", smoothness: float = 1e-3,
                 automask: bool = True) -> None:
        super().__init__()
        if pose_source not in ("network", "dataset"):
            raise ValueError(f"pose_source={pose_source!r} must be network or dataset")
        self.pose = PoseNetwork(pose_weights) if pose_source == "network" else None
        self.smoothness, self.automask = smoothness, automask

    def forward(self, depth: Mapping[int, torch.Tensor], batch: Mapping[str, Any]) -> torch.Tensor:
        missing = [key for key in ("frames", "frame_ids", "K") if key not in batch]
        if missing:
            raise KeyError(f"the batch has no {', '.join(missing)}: train.depth_loss='photometric' trains on "
                           "frame triplets; set data.sequence=true")
        if self.pose is None and "poses" not in batch:
            raise KeyError("the batch has no true poses: model.pose_source=dataset reads them from toy sequences; "
                           "use model.pose_source=network")
        image, sources = batch["image"], batch["frames"]
        poses = (batch["poses"].float() if self.pose is None
                 else self.pose.relative_poses(image, sources, [int(frame) for frame in batch["frame_ids"][0]]))
        disparities = {scale: disparity_from_code(code.float()) for scale, code in depth.items()}
        return photometric_loss(disparities, image.float(), sources.float(), batch["K"], poses,
                                smoothness=self.smoothness, automask=self.automask).loss
