"""Checks shared by the real-loader tests: a loaded sample against the fixture scene it came from."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from densemtl_lab.data.fixtures import FixtureScene
from densemtl_lab.data.geometry import edges_from_labels
from densemtl_lab.tasks import IGNORE_INDEX


def mapped(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Scene labels (Cityscapes train ids) -> a dataset's train ids, by a hand-written table."""
    return np.vectorize(lambda value: mapping.get(int(value), IGNORE_INDEX))(labels)


def smooth_surface_pixels(scene: FixtureScene) -> np.ndarray:
    """Pixels whose 3 x 3 neighbourhood lies on one primitive without a crease (n . n' >= 0.985),
    where depth-derived normals must equal the analytic ones up to depth quantisation."""
    boundary = edges_from_labels(torch.from_numpy(scene.primitives.astype(np.int64)), ignore_index=-1)
    near_boundary = F.max_pool2d(boundary[None], 3, stride=1, padding=1)[0, 0].numpy() > 0
    normals = np.pad(scene.normals, ((1, 1), (1, 1), (0, 0)), mode="edge")
    height, width = scene.labels.shape
    least_cosine = np.ones((height, width))
    for dy in range(3):
        for dx in range(3):
            cosine = (normals[dy:dy + height, dx:dx + width] * scene.normals).sum(-1)
            least_cosine = np.minimum(least_cosine, cosine)
    return ~near_boundary & (least_cosine >= 0.985)


def normal_errors_deg(sample: dict[str, object], scene: FixtureScene,
                      max_depth: float = float("inf")) -> np.ndarray:
    """Angles between the loader's normals and the scene's on valid, smooth pixels nearer than max_depth."""
    normals = sample["normals"].permute(1, 2, 0).numpy()  # H, W, 3
    keep = (np.abs(normals).sum(-1) > 0) & smooth_surface_pixels(scene) & (scene.depth < max_depth)
    cosine = (normals[keep] * scene.normals[keep]).sum(-1).clip(-1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def assert_edges_only_at_label_changes(sample: dict[str, object]) -> None:
    """Every edge pixel has a 4-neighbour of another (non-ignored) label, and edges exist."""
    edges = sample["edges"][0].numpy() > 0
    labels = np.pad(sample["semseg"].numpy(), 1, constant_values=IGNORE_INDEX)
    centre = labels[1:-1, 1:-1]
    changes = np.zeros_like(edges)
    for neighbour in (labels[:-2, 1:-1], labels[2:, 1:-1], labels[1:-1, :-2], labels[1:-1, 2:]):
        changes |= (neighbour != centre) & (neighbour != IGNORE_INDEX) & (centre != IGNORE_INDEX)
    assert edges.any()
    assert not (edges & ~changes).any()
    assert not (changes & ~edges).any()
