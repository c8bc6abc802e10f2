"""Tests of densemtl_lab.photometric: view synthesis on toy sequences and the Monodepth2 photometric loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl_lab.data.toy import ToyConfig, shade_target
from densemtl_lab.data.toy_sequence import NEIGHBOURS, sequence_views
from densemtl_lab.tasks.depth import (
    DISPARITY_MAX_DEPTH_M, DISPARITY_MIN_DEPTH_M, code_from_disparity, depth_to_disparity, disparity_from_code,
    disparity_to_depth,
)
from densemtl_lab.photometric import (
    edge_aware_smoothness, photometric_error, photometric_loss, project_into_source,
    ssim_distance, warp_to_target,
)

SIZE = (96, 192)


class _NoSensorNoise:
    """A stand-in noise generator that draws zeros: frames that differ by the camera's motion alone."""

    def standard_normal(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.zeros(shape, dtype)


def noise_free_sequence(index: int, severity: float = 0.5) -> dict[str, torch.Tensor]:
    """Frames -1, 0, +1 of toy target sample `index` without sensor noise, as floats in [0, 1] (unquantised),
    with frame 0's depth, K, the true poses T_{f<-0}, and each frame's instance ids and depth."""
    config = ToyConfig(8, SIZE, "target", severity, seed=0)
    views = list(sequence_views(config, index, (-1, 0, 1)))
    frames = [np.clip(shade_target(view.scene, view.render, view.look, severity, _NoSensorNoise()), 0, 1)
              for view in views]
    depths = [np.where(np.isfinite(view.render.depth), view.render.depth, 0.0) for view in views]
    instances = [view.render.instance for view in views]
    poses = [view.pose for view in views if view.frame in NEIGHBOURS]
    as_tensor = lambda array: torch.from_numpy(np.asarray(array, dtype=np.float32))  # noqa: E731
    return {"frames": as_tensor(frames), "depths": as_tensor(depths), "instances": torch.from_numpy(np.stack(instances)),
            "K": as_tensor(views[1].scene.camera.intrinsics()), "poses": as_tensor(poses)}


def comparable_pixels(sequence: dict[str, torch.Tensor], neighbour: int, depth: torch.Tensor) -> torch.Tensor:
    """The pixels of frame 0 on which warping the neighbour must reproduce it [H, W] (bool).

    Co-visible and not occluded: frame 0 has a depth (not sky), the true depth carries the pixel at
    least one pixel inside the neighbour's image, and all four pixels that the bilinear sample reads
    there show the same object instance as frame 0's pixel at (within 2 %) the depth the transform
    predicts. Textured: frame 0's intensity varies there (a central difference over 0.01 in x or y),
    so a wrong warp shows."""
    frame = 1 + neighbour  # index into frames: -1 -> 0, +1 -> 2
    pose = sequence["poses"][NEIGHBOURS.index(neighbour)]
    pixels = project_into_source(depth[None, None], sequence["K"][None], pose[None])[0]  # H, W, 2
    height, width = depth.shape
    x, y = pixels[..., 0], pixels[..., 1]
    inside = (x >= 1) & (x <= width - 2) & (y >= 1) & (y <= height - 2) & (depth > 0)
    points = torch.stack(torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")[::-1])
    rays = torch.linalg.inv(sequence["K"]) @ torch.cat([points, torch.ones(1, height, width)]).reshape(3, -1)
    moved = pose[:3, :3] @ (rays * depth.reshape(1, -1)) + pose[:3, 3:]
    moved_depth = moved[2].reshape(height, width)
    agree = inside.clone()
    x0, y0 = x.floor().long().clamp(0, width - 2), y.floor().long().clamp(0, height - 2)
    for dy in (0, 1):
        for dx in (0, 1):
            there_depth = sequence["depths"][frame][y0 + dy, x0 + dx]
            there_instance = sequence["instances"][frame][y0 + dy, x0 + dx]
            agree &= ((there_depth - moved_depth).abs() < 0.02 * moved_depth) & (there_instance == sequence["instances"][1])
    image = sequence["frames"][1].mean(0)
    gradient = torch.zeros_like(image)
    gradient[1:-1, 1:-1] = torch.maximum((image[1:-1, 2:] - image[1:-1, :-2]).abs(), (image[2:, 1:-1] - image[:-2, 1:-1]).abs())
    return agree & (gradient > 0.01)


def warp_error(sequence: dict[str, torch.Tensor], neighbour: int, depth: torch.Tensor, pose: torch.Tensor,
               mask: torch.Tensor) -> float:
    """Mean absolute difference over `mask` between frame 0 and the neighbour warped by `depth` and `pose`."""
    source = sequence["frames"][1 + neighbour][None]
    warped, _ = warp_to_target(source, depth[None, None], sequence["K"][None], pose[None])
    return float((warped[0] - sequence["frames"][1]).abs().mean(0)[mask].mean())


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("neighbour", NEIGHBOURS)
def test_warping_a_neighbour_with_the_true_depth_and_pose_reproduces_frame_0(index, neighbour):
    sequence = noise_free_sequence(index)
    depth, pose = sequence["depths"][1], sequence["poses"][NEIGHBOURS.index(neighbour)]
    mask = comparable_pixels(sequence, neighbour, depth)
    assert mask.float().mean() > 0.15  # a large share of the image is compared
    # What remains (about 0.006, median 0.002) is not geometry: bilinear resampling of sharp paint (windows,
    # lane marks), the target look's image-space blur, and its haze, which changes with the distance.
    true_error = warp_error(sequence, neighbour, depth, pose, mask)
    assert true_error < 0.01
    # The same pixels, a wrong geometry: depth 1.5x too far, or the pose of the other neighbour.
    other_pose = sequence["poses"][1 - NEIGHBOURS.index(neighbour)]
    assert warp_error(sequence, neighbour, 1.5 * depth, pose, mask) > 1.8 * true_error
    assert warp_error(sequence, neighbour, depth, other_pose, mask) > 3 * true_error


def test_the_warp_follows_the_pixel_centre_convention_exactly():
    # A pure sideways move of b metres at constant depth z shifts the image by f b / z pixels: with the
    # source camera 0.5 m to the right and f b / z = 2, warped pixel u reads source pixel u - 2 exactly
    # (no half-pixel drift), and the two leftmost columns fall outside the source.
    K = torch.tensor([[40.0, 0, 16], [0, 40.0, 8], [0, 0, 1]])
    depth = torch.full((1, 1, 16, 32), 10.0)
    pose = torch.eye(4)
    pose[0, 3] = -0.5  # the source camera stands 0.5 m to the right: x_s = x_0 - 0.5
    source = torch.arange(32.0).repeat(16, 1)[None, None]
    warped, inside = warp_to_target(source, depth, K[None], pose[None])
    assert torch.allclose(warped[0, 0, :, 2:], source[0, 0, :, :-2], atol=1e-4)
    assert inside[0, 0, :, 3:].all() and not inside[0, 0, :, :2].any()  # column 2 reads the edge itself


def test_disparity_to_depth_spans_the_bounds_linearly_in_inverse_depth():
    disparity = torch.tensor([0.0, 0.5, 1.0])
    depth = disparity_to_depth(disparity, 0.1, 100.0)
    assert torch.allclose(depth, torch.tensor([100.0, 1 / (0.01 + 0.5 * 9.99), 0.1]))
    assert torch.allclose(depth_to_disparity(depth, 0.1, 100.0), disparity, atol=1e-6)
    # A disparity head's outputs travel in the usual depth coding and come back unchanged.
    assert torch.allclose(disparity_from_code(code_from_disparity(disparity)), disparity, atol=1e-6)


def test_ssim_distance_of_constant_images_has_the_closed_form():
    # Constant images a and b: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.3, 0.5, 0.01 ** 2
    x, y = torch.full((1, 3, 8, 8), a), torch.full((1, 3, 8, 8), b)
    expected = (1 - (2 * a * b + c1) / (a * a + b * b + c1)) / 2
    assert torch.allclose(ssim_distance(x, y), torch.full_like(x, expected), atol=1e-4)  # fp32 variances
    assert float(ssim_distance(x, x).abs().max()) < 1e-6
    error = photometric_error(x, y)
    assert error.shape == (1, 1, 8, 8)
    assert torch.allclose(error, torch.full_like(error, 0.85 * expected + 0.15 * (b - a)), atol=1e-4)


def test_edge_aware_smoothness_is_zero_on_constant_disparity_and_damped_by_image_edges():
    flat = torch.full((1, 1, 8, 8), 0.3)
    image = torch.rand(1, 3, 8, 8)
    assert float(edge_aware_smoothness(flat, image)) == pytest.approx(0.0, abs=1e-7)
    ramp = torch.linspace(0.1, 0.9, 8).repeat(8, 1)[None, None]
    plain, edged = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    edged[..., 1::2] = 1.0  # a strong edge between every pair of columns
    assert float(edge_aware_smoothness(ramp, edged)) < 0.5 * float(edge_aware_smoothness(ramp, plain))


def inverse_sigmoid_disparity(depth: torch.Tensor) -> torch.Tensor:
    """The disparity (a sigmoid output) whose depth is `depth`, clamped to the disparity head's range."""
    return depth_to_disparity(depth.clamp(DISPARITY_MIN_DEPTH_M, DISPARITY_MAX_DEPTH_M))


def test_the_loss_is_lower_with_the_true_depth_and_its_automask_keeps_the_moving_pixels():
    sequence = noise_free_sequence(0)
    image, sources = sequence["frames"][1][None], sequence["frames"][[0, 2]][None]
    true_depth = sequence["depths"][1].clamp_min(80.0 * (sequence["depths"][1] == 0))  # sky: far away
    disparities = {0: inverse_sigmoid_disparity(true_depth)[None, None]}
    wrong = {0: inverse_sigmoid_disparity(1.5 * true_depth)[None, None]}
    args = (image, sources, sequence["K"][None], sequence["poses"][None])
    right = photometric_loss(disparities, *args, generator=torch.Generator().manual_seed(0))
    worse = photometric_loss(wrong, *args, generator=torch.Generator().manual_seed(0))
    assert float(right.loss) < 0.8 * float(worse.loss)
    assert right.warped.shape == (1, 2, 3, *SIZE) and right.automask.shape == (1, 1, *SIZE)
    moved = (sources - image[:, None]).abs().amax(dim=(1, 2))[:, None] > 0.05  # pixels the motion changed
    assert float(right.automask[moved].mean()) > 0.8  # the rest: occluded or out of view in both neighbours
    static = photometric_loss(disparities, image, image[:, None].repeat(1, 2, 1, 1, 1), *args[2:],
                              generator=torch.Generator().manual_seed(0))
    assert float(static.automask.mean()) < 0.6  # a static camera: the unwarped frame ties or wins


def test_the_loss_averages_its_scales_and_reaches_the_disparity_and_the_pose():
    torch.manual_seed(0)
    image, sources = torch.rand(2, 3, 32, 64), torch.rand(2, 2, 3, 32, 64)
    K = torch.tensor([[30.0, 0, 32], [0, 30.0, 16], [0, 0, 1]]).repeat(2, 1, 1)
    poses = torch.eye(4).repeat(2, 2, 1, 1)
    poses[..., 2, 3] = -1.0
    poses.requires_grad_(True)
    disparities = {s: torch.rand(2, 1, 32 // 2 ** s, 64 // 2 ** s, requires_grad=True) for s in range(4)}
    result = photometric_loss(disparities, image, sources, K, poses)
    assert len(result.per_scale) == 4
    assert torch.allclose(result.loss, torch.stack(result.per_scale).mean())
    result.loss.backward()
    assert all(d.grad is not None and d.grad.abs().sum() > 0 for d in disparities.values())
    assert poses.grad is not None and poses.grad.abs().sum() > 0
    plain = photometric_loss({s: d.detach() for s, d in disparities.items()}, image, sources, K, poses.detach(), automask=False)
    assert plain.automask is None and float(plain.loss) >= float(result.loss.detach()) - 1e-6  # the minimum gains options
