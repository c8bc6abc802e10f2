"""Camera geometry: intrinsics, back-projection, normals from depth, edges from labels."""

from __future__ import annotations

import math

import pytest
import torch

from densemtl_lab.data.geometry import (
    backproject,
    crop_intrinsics,
    edges_from_labels,
    normals_from_depth,
    pixel_rays,
    resize_nearest,
    scale_intrinsics,
)
from densemtl_lab.tasks import IGNORE_INDEX


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


K = intrinsics(20.0, 25.0, 8.0, 6.0)  # a 12 x 16 image


def plane_depth(normal: tuple[float, float, float], offset: float, K: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """z-depth [1, H, W] of the plane n . P = offset seen through K (P = z ray, ray z = 1)."""
    n = torch.tensor(normal, dtype=torch.float64)
    rays = pixel_rays(K, size)  # 3, H, W
    return (offset / torch.einsum("c,chw->hw", n, rays)).unsqueeze(0).to(torch.float32)


@pytest.mark.parametrize(
    ("from_size", "to_size", "expected"),
    [
        ((12, 16), (6, 8), (10.0, 12.5, 4.0, 3.0)),  # halved
        ((12, 16), (12, 32), (40.0, 25.0, 16.0, 6.0)),  # only the width doubles
        ((12, 16), (24, 16), (20.0, 50.0, 8.0, 12.0)),  # only the height doubles
    ],
)
def test_scale_intrinsics_scales_each_axis(from_size, to_size, expected):
    scaled = scale_intrinsics(K, from_size, to_size)
    assert scaled.dtype == torch.float32
    assert (scaled[0, 0].item(), scaled[1, 1].item(), scaled[0, 2].item(), scaled[1, 2].item()) == expected
    assert scaled[2].tolist() == [0.0, 0.0, 1.0]
    assert K[0, 0].item() == 20.0  # the input is untouched


def test_crop_intrinsics_shifts_the_principal_point():
    cropped = crop_intrinsics(K, top=2, left=3)
    assert cropped[0, 2].item() == 5.0 and cropped[1, 2].item() == 4.0
    assert cropped[0, 0].item() == 20.0 and cropped[1, 1].item() == 25.0


def test_pixel_rays_go_through_pixel_centres():
    rays = pixel_rays(K, (12, 16))
    assert rays.shape == (3, 12, 16)
    assert rays[:, 0, 0].tolist() == pytest.approx([(0.5 - 8) / 20, (0.5 - 6) / 25, 1.0])
    assert rays[:, 11, 15].tolist() == pytest.approx([(15.5 - 8) / 20, (11.5 - 6) / 25, 1.0])


@pytest.mark.parametrize("shape", [(1, 12, 16), (12, 16)])
def test_backproject_inverts_projection(shape):
    depth = torch.full(shape, 4.0)
    depth[..., 3, 5] = 0.0  # invalid
    points = backproject(depth, K)
    assert points.shape == (3, 12, 16)
    assert points[:, 3, 5].tolist() == [0.0, 0.0, 0.0]
    assert points[:, 2, 7].tolist() == pytest.approx([4 * (7.5 - 8) / 20, 4 * (2.5 - 6) / 25, 4.0])
    u = K[0, 0] * points[0] / points[2].clamp_min(1e-9) + K[0, 2] - 0.5
    v = K[1, 1] * points[1] / points[2].clamp_min(1e-9) + K[1, 2] - 0.5
    valid = depth.reshape(12, 16) > 0
    cols = torch.arange(16, dtype=torch.float32).expand(12, 16)
    rows = torch.arange(12, dtype=torch.float32)[:, None].expand(12, 16)
    assert torch.allclose(u[valid], cols[valid], atol=1e-4)
    assert torch.allclose(v[valid], rows[valid], atol=1e-4)


@pytest.mark.parametrize(
    ("normal", "offset"),
    [
        ((0.0, 0.0, -1.0), -5.0),  # fronto-parallel wall at z = 5
        ((0.0, -1.0, 0.0), -1.5),  # ground plane y = 1.5 seen from its top side
        ((-0.6, 0.0, -0.8), -4.0),  # a wall turned about y
        ((0.3, -0.4, -math.sqrt(0.75)), -3.0),  # an oblique plane
    ],
)
def test_normals_from_depth_recover_a_plane(normal, offset):
    size = (12, 16)
    if normal == (0.0, -1.0, 0.0):  # only the rows below the horizon see the ground
        K_ground = intrinsics(20.0, 25.0, 8.0, -1.0)
        depth, camera = plane_depth(normal, offset, K_ground, size), K_ground
    else:
        depth, camera = plane_depth(normal, offset, K, size), K
    assert (depth > 0).all()
    normals, valid = normals_from_depth(depth, camera)
    assert normals.shape == (3, 12, 16) and valid.shape == (1, 12, 16) and valid.dtype == torch.bool
    interior = torch.zeros(12, 16, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    assert torch.equal(valid[0], interior)  # only the 1-px border is masked
    expected = torch.tensor(normal).reshape(3, 1, 1).expand(3, 10, 14)
    assert torch.allclose(normals[:, 1:-1, 1:-1], expected, atol=1e-5)
    assert normals[:, 0].abs().sum() == 0 and normals[:, :, -1].abs().sum() == 0


def test_normals_point_towards_the_camera():
    depth = plane_depth((0.0, 0.0, 1.0), 5.0, K, (12, 16))  # the same wall, normal given away from us
    normals, valid = normals_from_depth(depth, K)
    points = backproject(depth, K)
    facing = (normals * points).sum(dim=0)
    assert (facing[valid[0]] < 0).all()


def test_normals_are_masked_at_a_depth_step_and_at_missing_depth():
    depth = torch.full((1, 12, 16), 5.0)
    depth[:, :, 8:] = 8.0  # a step between columns 7 and 8
    depth[:, 6, 3] = 0.0  # one missing pixel
    _, valid = normals_from_depth(depth, K)
    assert not valid[0, 4, 7] and not valid[0, 4, 8]  # both sides of the step
    assert valid[0, 4, 6] and valid[0, 4, 9]
    missing = [(6, 3), (5, 3), (7, 3), (6, 2), (6, 4)]  # the pixel and its 4-neighbours
    assert not any(valid[0, r, c] for r, c in missing)
    assert valid[0, 5, 2]  # a diagonal neighbour keeps its normal


def test_edges_mark_both_sides_of_label_changes():
    labels = torch.tensor([
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 2, 2],
    ])
    expected = torch.tensor([
        [0, 1, 1, 0],
        [1, 1, 1, 1],
        [1, 1, 1, 1],
    ], dtype=torch.float32)
    edges = edges_from_labels(labels)
    assert edges.shape == (1, 3, 4) and edges.dtype == torch.float32
    assert torch.equal(edges[0], expected)


def test_edges_skip_ignored_pixels_and_add_instance_boundaries():
    labels = torch.tensor([[0, 0, IGNORE_INDEX, 1]])
    assert edges_from_labels(labels)[0].tolist() == [[0.0, 0.0, 0.0, 0.0]]
    same_class = torch.tensor([[3, 3, 3, 3]])
    instances = torch.tensor([[1, 1, 2, 2]])
    assert edges_from_labels(same_class)[0].tolist() == [[0.0, 0.0, 0.0, 0.0]]
    assert edges_from_labels(same_class, instances=instances)[0].tolist() == [[0.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("shape", [(4, 6), (2, 4, 6)])
def test_resize_nearest_keeps_dtype_and_values(shape):
    label = torch.arange(24, dtype=torch.int64).reshape(4, 6).expand(*shape).clone()
    resized = resize_nearest(label, (8, 3))
    assert resized.dtype == torch.int64
    assert resized.shape == (*shape[:-2], 8, 3)
    # nearest-exact: output pixel i takes input pixel floor((i + 0.5) * in / out)
    expected = label[..., [0, 0, 1, 1, 2, 2, 3, 3], :][..., [1, 3, 5]]
    assert torch.equal(resized, expected)
