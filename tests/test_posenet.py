"""Tests of densemtl_lab.models.posenet: the pose network of self-supervised depth and its transforms."""

from __future__ import annotations

import math

import torch
import torchvision.models as tvm

from densemtl_lab.models.posenet import PoseNetwork, transformation_from_parameters


def test_a_transform_and_its_inverse_compose_to_the_identity():
    torch.manual_seed(0)
    axis_angle, translation = torch.randn(4, 3) * 0.3, torch.randn(4, 3)
    forward = transformation_from_parameters(axis_angle, translation)
    backward = transformation_from_parameters(axis_angle, translation, invert=True)
    assert torch.allclose(backward @ forward, torch.eye(4).expand(4, 4, 4), atol=1e-5)
    assert torch.allclose(forward[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(4, 4))


def test_the_parameters_mean_a_rotation_about_the_axis_then_a_translation():
    quarter_turn_about_z = torch.tensor([[0.0, 0.0, math.pi / 2]])
    transform = transformation_from_parameters(quarter_turn_about_z, torch.tensor([[1.0, 2.0, 3.0]]))
    x_axis = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert torch.allclose(transform[0] @ x_axis, torch.tensor([1.0, 3.0, 3.0, 1.0]), atol=1e-6)  # R x = y, + t
    shift = transformation_from_parameters(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.2]]), invert=True)
    assert torch.allclose(shift[0, :3, 3], torch.tensor([0.0, 0.0, 1.2]))


class _RecordingPoseNetwork(PoseNetwork):
    """A pose network whose forward records its inputs and returns a pure forward translation."""

    def forward(self, earlier, later):
        self.calls.append((earlier, later))
        return torch.zeros(earlier.shape[0], 3), torch.tensor([[0.0, 0.0, -1.0]]).expand(earlier.shape[0], 3)


def test_frames_go_in_temporal_order_and_earlier_neighbours_are_inverted():
    network = _RecordingPoseNetwork()
    network.calls = []
    image, sources = torch.full((2, 3, 32, 64), 0.5), torch.stack([torch.zeros(2, 3, 32, 64), torch.ones(2, 3, 32, 64)], 1)
    poses = network.relative_poses(image, sources, (-1, 1))
    (first_earlier, first_later), (second_earlier, second_later) = network.calls
    assert torch.equal(first_earlier, sources[:, 0]) and torch.equal(first_later, image)  # (-1, 0)
    assert torch.equal(second_earlier, image) and torch.equal(second_later, sources[:, 1])  # (0, +1)
    assert poses.shape == (2, 2, 4, 4)
    assert torch.allclose(poses[:, 0, 2, 3], torch.ones(2)) and torch.allclose(poses[:, 1, 2, 3], -torch.ones(2))


def test_a_fresh_pose_network_predicts_small_motions_and_learns():
    torch.manual_seed(0)
    network = PoseNetwork()
    image, sources = torch.rand(2, 3, 64, 128), torch.rand(2, 2, 3, 64, 128)
    poses = network.relative_poses(image, sources, (-1, 1))
    assert poses.shape == (2, 2, 4, 4) and poses.dtype == torch.float32
    assert float(poses.detach()[..., :3, 3].abs().max()) < 0.1  # outputs scaled by 0.01, as the reference's
    poses[..., :3, 3].sum().backward()
    assert network.encoder[0].weight.grad.abs().sum() > 0


def test_imagenet_style_weights_fill_both_frames_of_the_first_convolution(tmp_path):
    torch.manual_seed(1)
    resnet = tvm.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet.state_dict(), path)
    network = PoseNetwork(weights=path)
    kernel = resnet.conv1.weight
    assert torch.equal(network.encoder[0].weight, torch.cat([kernel, kernel], 1) / 2)
    assert torch.equal(network.encoder[4][0].conv1.weight, resnet.layer1[0].conv1.weight)
