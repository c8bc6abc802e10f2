"""Analytic ray casting of a toy scene: exact z-depth, primitive, class and normal for every pixel.

The ray of pixel (u, v) is d_c = K^-1 [u + .5, v + .5, 1] in the camera frame (z = 1), rotated
into the world by the pitch, d_w = R d_c. A hit at parameter t is the point t d_w, whose camera
z-depth is t itself (d_c has z = 1), so the z-buffer stores camera z-depth directly, as VKITTI2
and stereo depth do (reference/datasets.md C). Since the pitch turns about x, d_w.x depends on
the column only and d_w.y, d_w.z on the row only: slab tests of boxes and the ground plane need
only per-row and per-column vectors, broadcast into 2-D where they meet.

Each primitive is intersected only inside the screen window of its projected bounding box:
- ground plane y = h: t = h / d_y (normal -y);
- box: slab test; the normal is the entry face's axis with sign -sign(d_axis);
- vertical cylinder: the nearer root of |t (d_x, d_z) - (c_x, c_z)| = r, inside its height;
- sphere: the nearer root of |t d - c| = r; normal (p - c) / r.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

import numpy as np

from densemtl_lab.data.toy_scene import (
    ROAD_INSTANCE,
    SKY_INSTANCE,
    TERRAIN_INSTANCE,
    Camera,
    Scene,
)

_TINY = 1e-12
#: Primitive ids 0-2 are the sky and the two ground regions (the same ids as their instances).
_FIRST_PRIMITIVE = 3


@dataclass(frozen=True)
class Render:
    """The exact geometry of one rendered scene. Sky pixels: depth inf, instance 0, normals 0."""

    camera: Camera
    depth: np.ndarray  # H, W float64 camera z-depth in metres, inf on sky
    primitive: np.ndarray  # H, W int32 primitive id (0 sky, 1 road, 2 terrain, then boxes, cylinders, spheres)
    instance: np.ndarray  # H, W int32 instance id (Scene.instance_labels gives its class)
    labels: np.ndarray  # H, W uint8 class id (Cityscapes train id)
    normals_world: np.ndarray  # 3, H, W float32 unit normals in the world frame

    @cached_property
    def sky(self) -> np.ndarray:
        """H, W bool: the pixels whose ray hits nothing."""
        return self.instance == SKY_INSTANCE

    def normals(self) -> np.ndarray:
        """3, H, W float32 unit normals in the camera frame, n_c = R^T n_w (0 on sky)."""
        cos, sin = _pitch(self.camera)
        nx, ny, nz = self.normals_world
        return np.stack([nx, cos * ny - sin * nz, sin * ny + cos * nz])

    def points_world(self) -> np.ndarray:
        """3, H, W float32 hit points t d_w in the world frame (0 on sky)."""
        rays = camera_rays(self.camera)
        t = np.where(self.sky, np.float32(0), self.depth.astype(np.float32))
        dx, dy, dz = (direction.astype(np.float32) for direction in (rays.dx, rays.dy, rays.dz))
        return np.stack([t * dx[None, :], t * dy[:, None], t * dz[:, None]])


@dataclass(frozen=True)
class Rays:
    """World ray directions: x per column, y and z per row, with their safe inverses."""

    dx: np.ndarray  # W
    dy: np.ndarray  # H
    dz: np.ndarray  # H
    inv_dx: np.ndarray
    inv_dy: np.ndarray
    inv_dz: np.ndarray


#: World normals of the box face codes (0: none, 1/2: -x/+x, 3/4: -y/+y, 5/6: -z/+z).
_FACE_NORMALS = np.array([[0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]],
                         dtype=np.float32)
#: The ground's face code: normal -y (up, since y points down).
_GROUND_FACE = 3


def _face_codes(axis: int, normal_sign: np.ndarray) -> np.ndarray:
    """Face codes (int8) of normals along `axis` (0 x, 1 y, 2 z) with the given signs (-1, 0 or 1)."""
    return np.where(normal_sign == 0, 0, 2 * axis + 1 + (normal_sign > 0)).astype(np.int8)


class _Buffers:
    """The z-buffer and what it keeps for the nearest hit so far.

    The ground and the boxes store a face code per pixel instead of their axis-aligned normal (sky
    keeps code 0), so that each box writes three buffers instead of five; `face_normals` turns the
    codes into the normals buffer, which the curved primitives then write into.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.depth = np.full(shape, np.inf)
        self.primitive = np.full(shape, SKY_INSTANCE, dtype=np.int32)
        self.face = np.zeros(shape, dtype=np.int8)

    def keep(self, window: tuple[slice, slice], hit: np.ndarray, depth: np.ndarray, primitive: int) -> None:
        """Keep the depth and primitive id of hits (already tested nearer than the buffer) in `window`."""
        np.copyto(self.depth[window], depth, where=hit)
        np.copyto(self.primitive[window], primitive, where=hit)

    def write(self, window: tuple[slice, slice], hit: np.ndarray, depth: np.ndarray,
              primitive: int, nx: np.ndarray | float, ny: np.ndarray | float, nz: np.ndarray | float) -> None:
        """Keep a curved primitive's hits with their normals."""
        self.keep(window, hit, depth, primitive)
        np.copyto(self.nx[window], nx, where=hit)
        np.copyto(self.ny[window], ny, where=hit)
        np.copyto(self.nz[window], nz, where=hit)

    def write_box(self, window: tuple[slice, slice], hit: np.ndarray, depth: np.ndarray, primitive: int,
                  face: np.ndarray) -> None:
        """Keep a box's hits with their face codes."""
        self.keep(window, hit, depth, primitive)
        np.copyto(self.face[window], face, where=hit)

    def face_normals(self) -> None:
        """Create the 3, H, W world normals from the face codes (once the ground and boxes are in)."""
        self.normals = np.take(_FACE_NORMALS.T, self.face, axis=1)
        self.nx, self.ny, self.nz = self.normals


def _pitch(camera: Camera) -> tuple[float, float]:
    return float(np.cos(camera.pitch_rad)), float(np.sin(camera.pitch_rad))


def _safe_inverse(values: np.ndarray) -> np.ndarray:
    safe = np.where(np.abs(values) < _TINY, np.copysign(_TINY, values), values)
    return 1.0 / safe


def camera_rays(camera: Camera) -> Rays:
    """World directions of the pixel rays, d_w = R K^-1 [u + .5, v + .5, 1]."""
    cos, sin = _pitch(camera)
    x = (np.arange(camera.width) + 0.5 - camera.cx) / camera.fx
    y = (np.arange(camera.height) + 0.5 - camera.cy) / camera.fy
    dy = cos * y + sin
    dz = cos - sin * y
    return Rays(x, dy, dz, _safe_inverse(x), _safe_inverse(dy), _safe_inverse(dz))


def screen_windows(aabbs: np.ndarray, camera: Camera) -> np.ndarray:
    """Pixel windows [N, 4] (row0, row1, col0, col1) covering each world AABB [N, 6] on screen.

    The 8 corners are projected; a box with a corner behind the camera gets the full frame.
    """
    corner_x = aabbs[:, [0, 0, 0, 0, 3, 3, 3, 3]]  # N, 8
    corner_y = aabbs[:, [1, 1, 4, 4, 1, 1, 4, 4]]
    corner_z = aabbs[:, [2, 5, 2, 5, 2, 5, 2, 5]]
    cos, sin = _pitch(camera)
    cam_y = cos * corner_y - sin * corner_z
    cam_z = sin * corner_y + cos * corner_z
    behind = (cam_z < 1e-3).any(axis=1)
    cam_z = np.maximum(cam_z, 1e-3)
    u = camera.fx * corner_x / cam_z + camera.cx
    v = camera.fy * cam_y / cam_z + camera.cy
    windows = np.stack([
        np.floor(v.min(axis=1)) - 1, np.ceil(v.max(axis=1)) + 1,
        np.floor(u.min(axis=1)) - 1, np.ceil(u.max(axis=1)) + 1,
    ], axis=1)
    windows[behind] = (0, camera.height, 0, camera.width)
    limits = np.array([camera.height, camera.height, camera.width, camera.width])
    return np.clip(windows, 0, limits).astype(np.int64)


def _render_ground(buffers: _Buffers, scene: Scene, rays: Rays) -> None:
    """The ground plane y = h: road within the road's half-width, terrain beyond (normal -y)."""
    rows = rays.dy > 0
    t = scene.camera.mount_height_m * rays.inv_dy[rows]  # rows below the horizon
    x = t[:, None] * rays.dx[None, :]
    on_road = np.abs(x - scene.road_centre_x) < scene.road_half_width
    buffers.depth[rows] = t[:, None]
    buffers.primitive[rows] = np.where(on_road, ROAD_INSTANCE, TERRAIN_INSTANCE)
    buffers.face[rows] = _GROUND_FACE


def _windows(windows: np.ndarray) -> Iterator[tuple[int, tuple[slice, slice]]]:
    """(primitive index, (rows, cols)) for each non-empty screen window."""
    for index, (r0, r1, c0, c1) in enumerate(windows):
        if r0 < r1 and c0 < c1:
            yield index, (slice(r0, r1), slice(c0, c1))


def _nearer_root(a: np.ndarray, b: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """The smaller root t of a t^2 - 2 b t + c = 0, and where it is real."""
    disc = b * b - a * c
    return (b - np.sqrt(np.maximum(disc, 0.0))) / a, disc >= 0


def _render_boxes(buffers: _Buffers, boxes: np.ndarray, rays: Rays, windows: np.ndarray, first_id: int) -> None:
    """Slab test per box: per-axis entry/exit parameters are 1-D (x per column, y/z per row)."""
    tx0, tx1 = boxes[:, 0:1] * rays.inv_dx, boxes[:, 3:4] * rays.inv_dx  # N, W
    ty0, ty1 = boxes[:, 1:2] * rays.inv_dy, boxes[:, 4:5] * rays.inv_dy  # N, H
    tz0, tz1 = boxes[:, 2:3] * rays.inv_dz, boxes[:, 5:6] * rays.inv_dz
    near_x, far_x = np.minimum(tx0, tx1), np.maximum(tx0, tx1)
    near_y, near_z = np.minimum(ty0, ty1), np.minimum(tz0, tz1)
    near_yz = np.maximum(near_y, near_z)
    far_yz = np.minimum(np.maximum(ty0, ty1), np.maximum(tz0, tz1))
    enters_y = near_y >= near_z  # where the ray does not enter through an x face
    face_x = _face_codes(0, -np.sign(rays.dx))  # W
    face_yz = np.where(enters_y, _face_codes(1, -np.sign(rays.dy)), _face_codes(2, -np.sign(rays.dz)))  # N, H
    for index, (rows, cols) in _windows(windows):
        row_near = near_yz[index, rows, None]  # rows, 1
        col_near = near_x[index, None, cols]  # 1, cols
        near = np.maximum(row_near, col_near)  # rows, cols
        far = np.minimum(far_yz[index, rows, None], far_x[index, None, cols])
        hit = (near < far) & (near > 0) & (near < buffers.depth[rows, cols])
        if not hit.any():
            continue
        face = np.where(col_near >= row_near, face_x[None, cols], face_yz[index, rows, None])
        buffers.write_box((rows, cols), hit, near, first_id + index, face)


def _render_cylinders(buffers: _Buffers, cylinders: np.ndarray, rays: Rays, windows: np.ndarray,
                      first_id: int) -> None:
    """Vertical cylinders: the nearer hit of |t (d_x, d_z) - (c_x, c_z)| = r within the height."""
    for index, (rows, cols) in _windows(windows):
        cx, cz, radius, y_top, y_bottom = cylinders[index]
        dx, dy, dz = rays.dx[None, cols], rays.dy[rows, None], rays.dz[rows, None]
        t, real = _nearer_root(dx * dx + dz * dz, dx * cx + dz * cz, cx * cx + cz * cz - radius * radius)
        y = t * dy  # rows, cols
        hit = real & (t > 0) & (y >= y_top) & (y <= y_bottom) & (t < buffers.depth[rows, cols])
        if hit.any():
            buffers.write((rows, cols), hit, t, first_id + index,
                          (t * dx - cx) / radius, 0.0, (t * dz - cz) / radius)


def _render_spheres(buffers: _Buffers, spheres: np.ndarray, rays: Rays, windows: np.ndarray, first_id: int) -> None:
    """Spheres: the nearer hit of |t d - c| = r."""
    for index, (rows, cols) in _windows(windows):
        cx, cy, cz, radius = spheres[index]
        dx, dy, dz = rays.dx[None, cols], rays.dy[rows, None], rays.dz[rows, None]
        t, real = _nearer_root(dx * dx + (dy * dy + dz * dz), dx * cx + (dy * cy + dz * cz),
                               cx * cx + cy * cy + cz * cz - radius * radius)
        hit = real & (t > 0) & (t < buffers.depth[rows, cols])  # rows, cols
        if hit.any():
            buffers.write((rows, cols), hit, t, first_id + index,
                          (t * dx - cx) / radius, (t * dy - cy) / radius, (t * dz - cz) / radius)


def _cylinder_aabbs(cylinders: np.ndarray) -> np.ndarray:
    cx, cz, radius, y_top, y_bottom = cylinders.T
    return np.stack([cx - radius, y_top, cz - radius, cx + radius, y_bottom, cz + radius], axis=1)


def _sphere_aabbs(spheres: np.ndarray) -> np.ndarray:
    centre, radius = spheres[:, :3], spheres[:, 3:]
    return np.concatenate([centre - radius, centre + radius], axis=1)


def render_scene(scene: Scene) -> Render:
    """Ray-cast `scene`: nearest hit per pixel with its depth, primitive, instance, class and normals."""
    camera = scene.camera
    rays = camera_rays(camera)
    buffers = _Buffers((camera.height, camera.width))
    _render_ground(buffers, scene, rays)
    first_box = _FIRST_PRIMITIVE
    first_cylinder = first_box + len(scene.boxes)
    first_sphere = first_cylinder + len(scene.cylinders)
    _render_boxes(buffers, scene.boxes, rays, screen_windows(scene.boxes, camera), first_box)
    buffers.face_normals()  # before the curved primitives write theirs
    _render_cylinders(buffers, scene.cylinders, rays, screen_windows(_cylinder_aabbs(scene.cylinders), camera),
                      first_cylinder)
    _render_spheres(buffers, scene.spheres, rays, screen_windows(_sphere_aabbs(scene.spheres), camera),
                    first_sphere)
    instances = np.concatenate([
        np.arange(_FIRST_PRIMITIVE, dtype=np.int32), scene.box_instances, scene.cylinder_instances,
        scene.sphere_instances,
    ])
    instance = instances.take(buffers.primitive)
    return Render(
        camera=camera, depth=buffers.depth, primitive=buffers.primitive, instance=instance,
        labels=scene.instance_labels.take(instance), normals_world=buffers.normals,
    )
