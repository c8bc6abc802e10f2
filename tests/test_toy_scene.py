"""Scene sampling: camera per domain, primitives in front of the camera, content statistics."""

from __future__ import annotations

import numpy as np
import pytest

from densemtl_lab.data import toy_scene
from densemtl_lab.data.toy_scene import (
    NEAR_CLIP_M, SCENE_STYLES, TOY_CLASS_IDS, VEGETATION, VEHICLE, sample_camera, sample_scene,
)


@pytest.mark.parametrize(("low", "high"), [(-8.0, 0.0), (8.0, 25.0), (0, 3.0), (1.3, 1.7), (0.45, 0.6)])
def test_the_fast_draws_give_numpys_draws_bit_for_bit(low, high):
    """Scenes stay the same samples as with rng.uniform and rng.choice (the toy data's stored figures rely on it)."""
    seed = int(high * 100)
    fast, numpy_draws = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(2000):
        assert toy_scene._uniform(fast, low, high) == float(numpy_draws.uniform(low, high))
        assert toy_scene._side(fast) == int(numpy_draws.choice((-1, 1)))


@pytest.mark.parametrize(("domain", "cy"), [("source", 32.0), ("target", 28.8)])
def test_camera_intrinsics_at_the_working_size(domain, cy):
    camera = sample_camera(np.random.default_rng(0), (64, 128), SCENE_STYLES[domain])
    K = camera.intrinsics()
    assert K.dtype == np.float32
    assert np.allclose(K, [[89.6, 0, 64.0], [0, 89.6, cy], [0, 0, 1]])
    low, high = SCENE_STYLES[domain].camera_height_m
    assert low <= camera.mount_height_m <= high


def test_the_same_generator_state_gives_the_same_scene():
    a = sample_scene(np.random.default_rng([5, 0, 0, 7]), (64, 128), SCENE_STYLES["source"])
    b = sample_scene(np.random.default_rng([5, 0, 0, 7]), (64, 128), SCENE_STYLES["source"])
    c = sample_scene(np.random.default_rng([5, 0, 0, 8]), (64, 128), SCENE_STYLES["source"])
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.spheres, b.spheres)
    assert a.camera == b.camera
    assert not (a.boxes.shape == c.boxes.shape and np.array_equal(a.boxes, c.boxes))


@pytest.mark.parametrize("domain", ["source", "target"])
def test_primitives_lie_in_front_of_the_camera_and_never_contain_it(domain):
    for seed in range(30):
        scene = sample_scene(np.random.default_rng(seed), (64, 128), SCENE_STYLES[domain])
        boxes = scene.boxes
        assert (boxes[:, 2] >= NEAR_CLIP_M).all()  # near faces clipped
        assert (boxes[:, :3] < boxes[:, 3:]).all()  # min corner < max corner
        assert ((boxes[:, :3] > 0) | (boxes[:, 3:] < 0)).any(axis=1).all()  # origin outside every box
        cx, cz, radius, y_top, _ = scene.cylinders.T
        assert (np.hypot(cx, cz) > radius).all() and (y_top < 0).all()  # taller than the camera: no caps show
        centres, radii = scene.spheres[:, :3], scene.spheres[:, 3]
        assert (np.linalg.norm(centres, axis=1) > radii).all()
        assert set(scene.instance_labels.tolist()) <= set(TOY_CLASS_IDS)


def test_target_content_has_more_vehicles_and_fewer_trees():
    def counts(domain: str) -> tuple[float, float]:
        labels = [sample_scene(np.random.default_rng(seed), (64, 128), SCENE_STYLES[domain]).instance_labels
                  for seed in range(60)]
        return (np.mean([(lab == VEHICLE).sum() for lab in labels]),
                np.mean([(lab == VEGETATION).sum() for lab in labels]))

    source_vehicles, source_trees = counts("source")
    target_vehicles, target_trees = counts("target")
    assert target_vehicles > 1.4 * source_vehicles
    assert target_trees < 0.8 * source_trees
