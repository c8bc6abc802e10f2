"""Analytic ray casting of a toy scene: exact z-depth, primitive, class and normal for every pixel.

The ray of pixel (u, v) is d_c = K^-1 [u + .5, v + .5, 1] in the camera frame (z = 1), rotated
into the world by the pitch, d_w = R d_c. A hit at parameter t is the point t d_w, whose camera
z-depth is t itself (d_c has z = 1), so the z-buffer stores camera z-depth directly, as VKITTI2
and stereo depth do (docs/real_datasets.md). Since the pitch turns about x, d_w.x depends on
the column only and d_w.y, d_w.z on the row only: slab tests of boxes and the ground plane need
only per-row and per-column vectors, broadcast into 2-D where they meet.

Each primitive is intersected only inside the screen window of its projected bounding box:
- ground plane y = h: t = h / d_y (normal -y);
- box: slab test; the normal is the entry face's axis with sign -sign(d_axis);
- vertical cylinder: the nearer root of |t (d_x, d_z) - (c_x, c_z)| = r, inside its height;
- sphere: the nearer root of |t d - c| = r; normal (p - c) / r.

Large boxes are cast one by one, each on its window. Small boxes, cylinders and spheres are cast on
lists of all their window pixels at once (numpy's per-call cost outweighs their few pixels), and
each pixel keeps the nearest of its candidates. Every way keeps, per pixel, the nearest hit and of
equally near ones the lowest primitive id: the same image, bit for bit, as drawing the primitives
one by one in id order with a strict depth test.
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
#: Boxes whose screen window holds at most this many pixels are intersected all together, pixel by
#: pixel; larger ones one by one on their window (measured fastest at 128x256 on 2 cores).
_SMALL_WINDOW_PIXELS = 1024


@dataclass(frozen=True)
class Render:
    """The exact geometry of one rendered scene. Sky pixels: depth inf, instance 0, normals 0."""

    camera: Camera
    depth: np.ndarray  # H, W float64 camera z-depth in metres, inf on sky
    primitive: np.ndarray  # H, W int32 primitive id (0 sky, 1 road, 2 terrain, then boxes, cylinders, spheres)
    instance: np.ndarray  # H, W int32 instance id (Scene.instance_labels gives its class)
    labels: np.ndarray  # H, W uint8 class id (Cityscapes train id)
    normals_world: np.ndarray  # 3, H, W float32 unit normals in the world frame
    rays: Rays  # the world directions of the pixel rays

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
        t = self.depth.astype(np.float32)
        t[self.sky] = 0
        points = np.empty((3, *t.shape), dtype=np.float32)
        np.multiply(t, self.rays.dx.astype(np.float32)[None, :], out=points[0])
        np.multiply(t, self.rays.dy.astype(np.float32)[:, None], out=points[1])
        np.multiply(t, self.rays.dz.astype(np.float32)[:, None], out=points[2])
        return points


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

    def write_box(self, window: tuple[slice, slice], hit: np.ndarray, depth: np.ndarray, primitive: int,
                  face: np.ndarray) -> None:
        """Keep a box's hits (already tested nearer than the buffer) in `window` with their face codes."""
        np.copyto(self.depth[window], depth, where=hit)
        np.copyto(self.primitive[window], primitive, where=hit)
        np.copyto(self.face[window], face, where=hit)

    def face_normals(self) -> None:
        """Create the 3, H, W world normals from the face codes (once the ground and boxes are in)."""
        self.normals = np.take(_FACE_NORMALS.T, self.face, axis=1)


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


def _window_pixels(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(primitive index, row, column) of every pixel of every window [N, 4], window after window."""
    heights, widths = windows[:, 1] - windows[:, 0], windows[:, 3] - windows[:, 2]  # >= 0: clipped windows
    counts = heights * widths
    index = np.repeat(np.arange(len(windows)), counts)
    offset = np.arange(index.size) - np.repeat(np.cumsum(counts) - counts, counts)  # inside its window
    row, col = np.divmod(offset, widths[index])
    return index, row + windows[index, 0], col + windows[index, 2]


def _nearer_root(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smaller root t of a t^2 - 2 b t + c = 0, and where it is real."""
    disc = b * b - a * c
    return (b - np.sqrt(np.maximum(disc, 0.0))) / a, disc >= 0


def _keep_nearest(buffers: _Buffers, pixel: np.ndarray, depth: np.ndarray, primitive: np.ndarray) -> np.ndarray:
    """Write candidate hits (flat pixel, depth, primitive id) into the buffers; return the indices kept.

    Each pixel keeps its nearest hit, and of equally near ones the lowest primitive id, the buffer's
    included: the result is the same as drawing every primitive one by one in id order with a strict
    depth test, whatever the order in which the candidates come.
    """
    buffer_depth, buffer_primitive = buffers.depth.reshape(-1), buffers.primitive.reshape(-1)  # views
    primitive = primitive.astype(buffer_primitive.dtype)  # minimum.at is slow when it has to cast
    current = buffer_depth[pixel]
    kept = np.flatnonzero((depth < current) | ((depth == current) & (primitive < buffer_primitive[pixel])))
    np.minimum.at(buffer_depth, pixel[kept], depth[kept])
    kept = kept[depth[kept] == buffer_depth[pixel[kept]]]  # the nearest per pixel (several on a tie)
    buffer_primitive[pixel[kept]] = np.iinfo(buffer_primitive.dtype).max
    np.minimum.at(buffer_primitive, pixel[kept], primitive[kept])
    return kept[primitive[kept] == buffer_primitive[pixel[kept]]]  # one per pixel


@dataclass(frozen=True)
class _Slabs:
    """Ray parameters where the rays enter and leave each box's slabs, [N, W] in x and [N, H] in y-z,
    and the face codes of the faces they enter through."""

    near_x: np.ndarray
    far_x: np.ndarray
    near_yz: np.ndarray
    far_yz: np.ndarray
    face_x: np.ndarray  # W
    face_yz: np.ndarray  # N, H
    in_front: np.ndarray  # N: every ray enters the box's y-z slab ahead of the camera

    @classmethod
    def of(cls, boxes: np.ndarray, rays: Rays) -> _Slabs:
        tx0, tx1 = boxes[:, 0:1] * rays.inv_dx, boxes[:, 3:4] * rays.inv_dx  # N, W
        ty0, ty1 = boxes[:, 1:2] * rays.inv_dy, boxes[:, 4:5] * rays.inv_dy  # N, H
        tz0, tz1 = boxes[:, 2:3] * rays.inv_dz, boxes[:, 5:6] * rays.inv_dz
        near_y, near_z = np.minimum(ty0, ty1), np.minimum(tz0, tz1)
        near_yz = np.maximum(near_y, near_z)
        enters_y = near_y >= near_z  # where the ray does not enter through an x face
        return cls(
            near_x=np.minimum(tx0, tx1), far_x=np.maximum(tx0, tx1), near_yz=near_yz,
            far_yz=np.minimum(np.maximum(ty0, ty1), np.maximum(tz0, tz1)),
            face_x=_face_codes(0, -np.sign(rays.dx)),
            face_yz=np.where(enters_y, _face_codes(1, -np.sign(rays.dy)), _face_codes(2, -np.sign(rays.dz))),
            in_front=(near_yz > 0).all(axis=1),
        )


def _render_box_windows(buffers: _Buffers, slabs: _Slabs, windows: np.ndarray, first_id: int) -> None:
    """Slab test box after box, each on its window: 2-D parameters from the 1-D ones of the rows and columns."""
    for index, (rows, cols) in _windows(windows):
        row_near = slabs.near_yz[index, rows, None]  # rows, 1
        col_near = slabs.near_x[index, None, cols]  # 1, cols
        near = np.maximum(row_near, col_near)  # rows, cols
        bound = np.minimum(slabs.far_yz[index, rows, None], slabs.far_x[index, None, cols])  # where the ray leaves
        np.minimum(bound, buffers.depth[rows, cols], out=bound)  # ... or meets a nearer hit
        hit = near < bound
        if not (slabs.in_front[index] or (col_near > 0).all()):  # entries behind the camera (inside the box)
            hit &= near > 0
        face = np.where(col_near >= row_near, slabs.face_x[None, cols], slabs.face_yz[index, rows, None])
        buffers.write_box((rows, cols), hit, near, first_id + index, face)


def _render_box_pixels(buffers: _Buffers, slabs: _Slabs, windows: np.ndarray, first_id: int) -> None:
    """The same slab test on the pixels of all the windows at once (for small windows, where numpy's
    per-call cost outweighs the work of a box-by-box loop)."""
    index, rows, cols = _window_pixels(windows)
    row_near, col_near = slabs.near_yz[index, rows], slabs.near_x[index, cols]
    near = np.maximum(row_near, col_near)
    hits = np.flatnonzero((near < np.minimum(slabs.far_yz[index, rows], slabs.far_x[index, cols])) & (near > 0))
    pixel = rows[hits] * slabs.face_x.size + cols[hits]
    hits = hits[_keep_nearest(buffers, pixel, near[hits], first_id + index[hits])]
    index, rows, cols = index[hits], rows[hits], cols[hits]
    enters_x = col_near[hits] >= row_near[hits]
    buffers.face[rows, cols] = np.where(enters_x, slabs.face_x[cols], slabs.face_yz[index, rows])


def _render_boxes(buffers: _Buffers, boxes: np.ndarray, rays: Rays, windows: np.ndarray, first_id: int) -> None:
    """Boxes: slab tests, box by box on large windows, all pixels at once on small ones."""
    slabs = _Slabs.of(boxes, rays)
    small = (windows[:, 1] - windows[:, 0]) * (windows[:, 3] - windows[:, 2]) <= _SMALL_WINDOW_PIXELS
    _render_box_windows(buffers, slabs, np.where(small[:, None], 0, windows), first_id)
    _render_box_pixels(buffers, slabs, np.where(small[:, None], windows, 0), first_id)


def _curved_table(scene: Scene) -> np.ndarray:
    """Cylinders and spheres in one table [M + K, 7]: centre x, y, z, radius, y top, y bottom, is sphere.

    A cylinder is a sphere-like quadric without its y terms (centre y 0, the y of the ray ignored),
    cut to its height; a sphere is uncut (y from -inf to inf).
    """
    cylinders, spheres = scene.cylinders, scene.spheres
    cylinder_rows = np.stack([cylinders[:, 0], np.zeros(len(cylinders)), *cylinders[:, 1:].T,
                              np.zeros(len(cylinders))], axis=1)
    sphere_rows = np.concatenate([spheres, np.tile([-np.inf, np.inf, 1.0], (len(spheres), 1))], axis=1)
    return np.concatenate([cylinder_rows, sphere_rows])


def _curved_aabbs(curved: np.ndarray) -> np.ndarray:
    """World AABBs [N, 6] of the `_curved_table` rows: x and z within the radius, y the height or radius."""
    cx, cy, cz, radius, y_top, y_bottom, sphere = curved.T
    y_low = np.where(sphere == 1, cy - radius, y_top)
    y_high = np.where(sphere == 1, cy + radius, y_bottom)
    return np.stack([cx - radius, y_low, cz - radius, cx + radius, y_high, cz + radius], axis=1)


def _render_curved(buffers: _Buffers, curved: np.ndarray, rays: Rays, windows: np.ndarray, first_id: int) -> None:
    """Cylinders and spheres in one pass over the pixels of all their windows.

    The nearer root of |t d' - c| = r, where d' is the ray without its y for a cylinder (the distance
    in x-z), kept within the cylinder's height; normal (t d' - c) / r.
    """
    cx, cy, cz, radius, y_top, y_bottom, sphere = curved.T
    constant = cx * cx + cy * cy + cz * cz - radius * radius  # |c|^2 - r^2 per primitive
    index, rows, cols = _window_pixels(windows)
    cx, cy, cz, radius, y_top, y_bottom, sphere, constant = (column[index] for column in (
        cx, cy, cz, radius, y_top, y_bottom, sphere, constant))
    dx, dy, dz = rays.dx[cols], rays.dy[rows], rays.dz[rows]
    dy_quadric = dy * sphere  # 0 for a cylinder
    t, real = _nearer_root(dx * dx + (dy_quadric * dy_quadric + dz * dz), dx * cx + (dy_quadric * cy + dz * cz),
                           constant)
    y = t * dy
    hits = np.flatnonzero(real & (t > 0) & (y >= y_top) & (y <= y_bottom))
    pixel = rows[hits] * rays.dx.size + cols[hits]
    kept = _keep_nearest(buffers, pixel, t[hits], first_id + index[hits])
    hits, pixel = hits[kept], pixel[kept]
    t, dx, dy, dz = t[hits], dx[hits], dy[hits], dz[hits]
    cx, cy, cz, radius, sphere = cx[hits], cy[hits], cz[hits], radius[hits], sphere[hits]
    buffers.normals.reshape(3, -1)[:, pixel] = np.stack([
        (t * dx - cx) / radius, np.where(sphere == 1, (t * dy - cy) / radius, 0.0), (t * dz - cz) / radius,
    ])


def render_scene(scene: Scene) -> Render:
    """Ray-cast `scene`: nearest hit per pixel with its depth, primitive, instance, class and normals."""
    camera = scene.camera
    rays = camera_rays(camera)
    buffers = _Buffers((camera.height, camera.width))
    _render_ground(buffers, scene, rays)
    curved = _curved_table(scene)
    boxes = len(scene.boxes)
    windows = screen_windows(np.concatenate([scene.boxes, _curved_aabbs(curved)]), camera)
    _render_boxes(buffers, scene.boxes, rays, windows[:boxes], _FIRST_PRIMITIVE)
    buffers.face_normals()  # before the curved primitives write theirs
    _render_curved(buffers, curved, rays, windows[boxes:], _FIRST_PRIMITIVE + boxes)
    instances = np.concatenate([
        np.arange(_FIRST_PRIMITIVE, dtype=np.int32), scene.box_instances, scene.cylinder_instances,
        scene.sphere_instances,
    ])
    instance = instances.take(buffers.primitive)
    return Render(
        camera=camera, depth=buffers.depth, primitive=buffers.primitive, instance=instance,
        labels=scene.instance_labels.take(instance), normals_world=buffers.normals, rays=rays,
    )
