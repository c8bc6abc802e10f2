"""The toy scenes' normal labels against the surface that their depth describes, on planar patches.

A box face code written on the wrong face, or a normal kept from another primitive than the depth,
shows as a 90 degree disagreement on whole planar patches; these tests allow none.

Planar patches are 3x3 neighbourhoods of one primitive and one rendered normal whose inverse depth
is affine (exactly so on a plane). There, central differences of the back-projected points lie in
the plane, so the normal derived from depth is exact up to rounding.

The stored `depth` label is 0 (unknown) beyond MAX_DEPTH_M (80 m). It used to be clamped to 80 m,
which turned every far surface into a constant-depth, fronto-parallel "plane" whose derived normal is
(0, 0, -1), up to 90 degrees from the surface's normal (building walls, road and terrain beyond 80 m:
0.3-0.5% of the pixels on planar patches); the stored-array test below caught that.
"""

from __future__ import annotations

import numpy as np
import pytest

from densemtl_lab.data import toy_render
from densemtl_lab.data.toy import ToyConfig, render_toy_arrays
from densemtl_lab.data.toy_render import render_scene
from densemtl_lab.data.toy_scene import (
    BUILDING, ROAD, SCENE_STYLES, SIDEWALK, VEHICLE, sample_scene,
)
from densemtl_lab.tasks import MAX_DEPTH_M

SIZES = [(64, 128), (128, 256), (45, 83)]  # the last one odd: nothing assumes multiples of 16


def neighbours(values: np.ndarray) -> list[np.ndarray]:
    """The 9 shifted views [..., H - 2, W - 2] of the 3x3 neighbourhoods: the centre, then the
    offsets (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1) in (row, column)."""
    height, width = values.shape[-2:]
    offsets = [(0, 0)] + [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    return [values[..., 1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx] for dy, dx in offsets]


def planar_patch_angles(depth: np.ndarray, K: np.ndarray, normals: np.ndarray, primitive: np.ndarray,
                        flatness: float) -> tuple[np.ndarray, np.ndarray]:
    """(mask, angles in degrees) [H, W]: the pixels at the centre of a planar 3x3 patch, and there the
    angle between the camera-frame `normals` and the normal of the depth (cross product of the central
    differences of the back-projected points, turned towards the camera).

    A patch is planar when its 9 pixels have depth (> 0, finite), one `primitive` and one normal, and
    the second differences of inverse depth (along u, along v and mixed) are at most `flatness` times
    the centre's inverse depth.
    """
    z = np.where(np.isfinite(depth), depth, 0.0).astype(np.float64)
    height, width = z.shape
    K = K.astype(np.float64)
    u = (np.arange(width) + 0.5 - K[0, 2]) / K[0, 0]
    v = (np.arange(height) + 0.5 - K[1, 2]) / K[1, 1]
    points = np.stack([z * u[None, :], z * v[:, None], z])
    derived = np.cross(points[:, 1:-1, 2:] - points[:, 1:-1, :-2], points[:, 2:, 1:-1] - points[:, :-2, 1:-1], axis=0)
    derived *= -np.sign((derived * points[:, 1:-1, 1:-1]).sum(axis=0))  # towards the camera
    rendered = normals.astype(np.float64)
    # atan2(|a x b|, a . b): exact near 0, where arccos of float32 normals would read ~0.02 degrees
    angles = np.degrees(np.arctan2(np.linalg.norm(np.cross(derived, rendered[:, 1:-1, 1:-1], axis=0), axis=0),
                                   (derived * rendered[:, 1:-1, 1:-1]).sum(axis=0)))

    inverse = np.where(z > 0, 1 / np.where(z > 0, z, 1.0), 0.0)
    centre, top_left, top, top_right, left, right, bottom_left, bottom, bottom_right = neighbours(inverse)
    mask = ((np.abs(left + right - 2 * centre) <= flatness * centre)
            & (np.abs(top + bottom - 2 * centre) <= flatness * centre)
            & (np.abs(bottom_right - bottom_left - top_right + top_left) <= flatness * centre))
    for depth_n, primitive_n, normal_n in zip(neighbours(z), neighbours(primitive), neighbours(rendered)):
        mask &= (depth_n > 0) & (primitive_n == primitive[1:-1, 1:-1]) & (normal_n == rendered[:, 1:-1, 1:-1]).all(axis=0)
    return np.pad(mask, 1), np.pad(np.where(mask, angles, 0.0), 1)


def render_angles(scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, angles, labels) of a scene's exact render (float64, uncapped depth)."""
    render = render_scene(scene)
    cam = scene.camera
    K = np.array([[cam.fx, 0, cam.cx], [0, cam.fy, cam.cy], [0, 0, 1]])  # float64, not the float32 label
    mask, angles = planar_patch_angles(render.depth, K, render.normals(), render.primitive, flatness=1e-6)
    return mask, angles, render.labels


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("domain", ["source", "target"])
def test_rendered_normals_are_the_normals_of_the_rendered_depth_on_planar_patches(domain, size):
    checked, total, classes = 0, 0, set()
    for index in range(8):
        scene = sample_scene(np.random.default_rng([11, index]), size, SCENE_STYLES[domain])
        mask, angles, labels = render_angles(scene)
        worst = np.unravel_index(np.argmax(angles), angles.shape)
        assert angles.max() < 0.01, (index, worst, labels[worst], angles.max())  # measured: < 1e-5
        checked, total = checked + mask.sum(), total + mask.size
        classes |= set(np.unique(labels[mask]).tolist())
    assert checked / total > 0.4  # measured .5 - .8: the check covers most of the image
    assert {ROAD, SIDEWALK, BUILDING, VEHICLE} <= classes  # ground, kerbs, walls and cars


@pytest.mark.parametrize("size", [(64, 128), (128, 256)], ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("domain", ["source", "target"])
def test_stored_normals_agree_with_the_stored_depth_on_every_planar_patch(domain, size):
    """The label arrays as stored (float32 depth, 0 beyond 80 m): every planar patch within 1 degree."""
    config = ToyConfig(12, size, domain=domain, seed=11)
    checked = 0
    for index in range(config.length):
        arrays = render_toy_arrays(config, index)
        depth = arrays["depth"]
        assert depth.max() <= MAX_DEPTH_M
        mask, angles = planar_patch_angles(depth, arrays["K"], arrays["normals"], arrays["semseg"],
                                           flatness=1e-3)  # float32 depth: looser flatness
        assert angles.max() < 1.0, (index, np.unravel_index(np.argmax(angles), angles.shape), angles.max())
        checked += mask.sum()
    assert checked > 0.4 * config.length * depth.size


def test_the_check_catches_box_normals_written_on_the_wrong_face(monkeypatch):
    """A face code read as another axis (x and z swapped) must fail the planar-patch check."""
    swapped = toy_render._FACE_NORMALS[[0, 5, 6, 3, 4, 1, 2]]
    monkeypatch.setattr(toy_render, "_FACE_NORMALS", swapped)
    scene = sample_scene(np.random.default_rng([11, 0]), (64, 128), SCENE_STYLES["source"])
    mask, angles, labels = render_angles(scene)
    assert (angles[mask & (labels == BUILDING)] > 80).mean() > 0.5
