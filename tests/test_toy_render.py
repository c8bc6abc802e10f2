"""The analytic ray caster: closed-form hits, normals, culling windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from densemtl_lab.data import toy_render
from densemtl_lab.data.toy_render import render_scene, screen_windows
from densemtl_lab.data.toy_scene import (
    BUILDING, POLE, ROAD, SCENE_STYLES, SKY, TERRAIN, VEGETATION, VEHICLE, Camera, Scene, sample_scene,
)

SIZE = (64, 128)


def camera(pitch_deg: float = 0.0, mount_height_m: float = 1.5) -> Camera:
    return Camera(height=SIZE[0], width=SIZE[1], fx=89.6, fy=89.6, cx=64.0, cy=32.0,
                  mount_height_m=mount_height_m, pitch_rad=float(np.deg2rad(pitch_deg)))


def scene_of(cam: Camera, boxes=(), cylinders=(), spheres=(), labels=()) -> Scene:
    """A scene with a 4 m road centred on the camera and the given primitives, one instance each."""
    ids = iter(range(3, 3 + len(labels)))
    return Scene(
        camera=cam, road_centre_x=0.0, road_half_width=4.0,
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 6),
        box_instances=np.array([next(ids) for _ in boxes], dtype=np.int32),
        cylinders=np.array(cylinders, dtype=np.float64).reshape(-1, 5),
        cylinder_instances=np.array([next(ids) for _ in cylinders], dtype=np.int32),
        spheres=np.array(spheres, dtype=np.float64).reshape(-1, 4),
        sphere_instances=np.array([next(ids) for _ in spheres], dtype=np.int32),
        instance_labels=np.array([SKY, ROAD, TERRAIN, *labels], dtype=np.uint8),
    )


def test_ground_plane_depth_matches_its_closed_form_at_pitch_0():
    cam = camera(mount_height_m=1.6)
    render = render_scene(scene_of(cam))
    v = np.arange(SIZE[0]) + 0.5
    below = v > cam.cy
    closed_form = cam.mount_height_m * cam.fy / (v[below] - cam.cy)  # z = h fy / (v + .5 - cy)
    assert np.allclose(render.depth[below], closed_form[:, None], rtol=1e-12)
    assert np.isinf(render.depth[~below]).all() and (render.labels[~below] == SKY).all()
    assert np.allclose(render.normals()[:, below], np.array([0, -1, 0])[:, None, None])
    u = np.arange(SIZE[1]) + 0.5
    x = render.depth * (u - cam.cx) / cam.fx  # the hit's lateral position
    on_road = np.abs(x) < 4.0
    assert (render.labels[below][on_road[below]] == ROAD).all()
    assert (render.labels[below][~on_road[below]] == TERRAIN).all()


def test_ground_of_a_sampled_scene_at_pitch_0_matches_the_closed_form():
    scene = sample_scene(np.random.default_rng(3), SIZE, SCENE_STYLES["source"])
    scene = dataclasses.replace(scene, camera=dataclasses.replace(scene.camera, pitch_rad=0.0))
    render = render_scene(scene)
    v = np.arange(SIZE[0])[:, None] + 0.5
    ground = np.isin(render.instance, (1, 2))  # the road and terrain instances
    assert ground.sum() > 500
    closed_form = scene.camera.mount_height_m * scene.camera.fy / (v - scene.camera.cy)
    assert np.allclose(render.depth[ground], np.broadcast_to(closed_form, SIZE)[ground], rtol=1e-12)


def test_box_faces_give_depth_and_axis_normals():
    cam = camera(mount_height_m=50.0)  # ground far below
    facing = (-1.0, -1.0, 10.0, 1.0, 1.0, 12.0)  # a box straight ahead
    side = (3.0, -2.0, 2.0, 4.0, 2.0, 30.0)  # a wall on the right, seen from its x = 3 face
    render = render_scene(scene_of(cam, boxes=[facing, side], labels=[BUILDING, BUILDING]))
    normals = render.normals()
    assert render.depth[31, 63] == pytest.approx(10.0)
    assert normals[:, 31, 63].tolist() == pytest.approx([0, 0, -1])
    u = 120  # a column that sees the side wall
    x_ray = (u + 0.5 - cam.cx) / cam.fx
    assert render.depth[31, u] == pytest.approx(3.0 / x_ray)
    assert normals[:, 31, u].tolist() == pytest.approx([-1, 0, 0])
    assert render.instance[31, 63] == 3 and render.instance[31, u] == 4


def test_sphere_and_cylinder_hits_and_normals():
    cam = camera(mount_height_m=50.0)
    render = render_scene(scene_of(
        cam, cylinders=[(-3.0, 10.0, 0.5, -5.0, 5.0)], spheres=[(3.0, 0.0, 10.0, 1.0)],
        labels=[POLE, VEGETATION],
    ))
    normals = render.normals()
    # the pole is a vertical cylinder (distance in x-z), the crown a sphere (distance in 3-D)
    for u, centre, axes, radius, label in ((int(64 - 3 / 10 * 89.6), (-3.0, 0.0, 10.0), [0, 2], 0.5, POLE),
                                           (int(64 + 3 / 10 * 89.6), (3.0, 0.0, 10.0), [0, 1, 2], 1.0, VEGETATION)):
        ray = np.array([(u + 0.5 - cam.cx) / cam.fx, (31.5 - cam.cy) / cam.fy, 1.0])
        point = render.depth[31, u] * ray
        assert render.labels[31, u] == label
        assert np.linalg.norm((point - centre)[axes]) == pytest.approx(radius)  # on the surface
        expected = np.zeros(3)
        expected[axes] = (point - centre)[axes] / radius  # pitch 0: camera frame = world frame
        assert normals[:, 31, u].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
        assert normals[:, 31, u] @ ray < 0  # facing the camera


@pytest.mark.parametrize("pitch_deg", [-2.0, 0.0, 3.0])
def test_culling_windows_change_nothing(monkeypatch, pitch_deg):
    scene = sample_scene(np.random.default_rng(11), SIZE, SCENE_STYLES["target"])
    scene = dataclasses.replace(scene, camera=dataclasses.replace(scene.camera, pitch_rad=np.deg2rad(pitch_deg)))
    culled = render_scene(scene)

    def full_frame(aabbs, cam):
        return np.tile([0, cam.height, 0, cam.width], (len(aabbs), 1))

    monkeypatch.setattr(toy_render, "screen_windows", full_frame)
    brute = render_scene(scene)
    assert np.array_equal(culled.depth, brute.depth)
    assert np.array_equal(culled.primitive, brute.primitive)
    assert np.array_equal(culled.normals_world, brute.normals_world)


def test_a_box_behind_the_camera_gets_the_full_frame():
    cam = camera()
    windows = screen_windows(np.array([[-1.0, -1.0, -5.0, 1.0, 1.0, 5.0], [-1.0, -1.0, 10.0, 1.0, 1.0, 12.0]]), cam)
    assert windows[0].tolist() == [0, 64, 0, 128]
    r0, r1, c0, c1 = windows[1]
    assert 0 < r0 < 32 < r1 < 64 and 0 < c0 < 64 < c1 < 128


@pytest.mark.parametrize("seed", range(4))
def test_normals_are_unit_and_face_the_camera(seed):
    scene = sample_scene(np.random.default_rng(seed), SIZE, SCENE_STYLES["source"])
    render = render_scene(scene)
    normals = render.normals()
    hit = ~render.sky
    assert np.allclose(np.linalg.norm(normals[:, hit], axis=0), 1.0, atol=1e-6)
    assert (normals[:, render.sky] == 0).all()
    cam = scene.camera
    rays = np.stack(np.broadcast_arrays(
        ((np.arange(SIZE[1]) + 0.5 - cam.cx) / cam.fx)[None, :], ((np.arange(SIZE[0]) + 0.5 - cam.cy) / cam.fy)[:, None],
        np.ones((1, 1)),
    ))
    assert ((normals * rays).sum(axis=0)[hit] < 0).all()


@pytest.mark.parametrize("small_window_pixels", [0, 1024, 10**9])
def test_coincident_primitives_go_to_the_lower_id_as_if_drawn_in_order(monkeypatch, small_window_pixels):
    """Equal depths keep the first primitive drawn, whether boxes are cast window by window or all at once."""
    monkeypatch.setattr(toy_render, "_SMALL_WINDOW_PIXELS", small_window_pixels)
    cam = camera(mount_height_m=50.0)
    box = (-1.0, -1.0, 10.0, 1.0, 1.0, 12.0)
    sphere = (3.0, 0.0, 10.0, 1.0)
    render = render_scene(scene_of(cam, boxes=[box, box], spheres=[sphere, sphere],
                                   labels=[BUILDING, VEHICLE, VEGETATION, POLE]))
    assert render.instance[31, 63] == 3  # the first box, not the second
    sphere_column = int(64 + 3 / 10 * 89.6)
    assert render.instance[31, sphere_column] == 5  # the first sphere, not the second
    assert not np.isin(render.instance, (4, 6)).any()


@pytest.mark.parametrize("domain", ["source", "target"])
@pytest.mark.parametrize("seed", range(3))
def test_boxes_cast_window_by_window_or_all_at_once_give_the_same_render(monkeypatch, domain, seed):
    scene = sample_scene(np.random.default_rng(seed), (128, 256), SCENE_STYLES[domain])
    renders = []
    for small_window_pixels in (0, 10**9):  # every box by its window; every box pixel by pixel
        monkeypatch.setattr(toy_render, "_SMALL_WINDOW_PIXELS", small_window_pixels)
        renders.append(render_scene(scene))
    for name in ("depth", "primitive", "normals_world"):
        assert np.array_equal(getattr(renders[0], name), getattr(renders[1], name)), name
