"""Scene sampling for the toy urban scenes: the camera, the street and the objects along it.

A scene is a straight street seen from a car (the scene model of `densemtl_lab.data.toy`). World frame = the camera
frame before its pitch: x right, y down, z forward, camera at the origin, ground plane at y = +h.
Every object is an analytic primitive that the ray caster in `toy_render.py` intersects exactly:
- axis-aligned boxes: sidewalks (0.15 m kerbs), buildings, vehicle bodies and cabins, pole signs;
- vertical cylinders: poles and tree trunks (always taller than the camera, so no caps show);
- spheres: tree crowns.
Each primitive belongs to an instance (a vehicle's body and cabin share one); each instance has a
class. Instance 0 is the sky, 1 the road surface and 2 the terrain (the ground beyond the kerbs).
Content and camera statistics differ between the domains (`SCENE_STYLES`) but not with severity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cityscapes train ids of the eight toy classes.
ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, TERRAIN, SKY, VEHICLE = 0, 1, 2, 5, 8, 9, 10, 13

#: The classes the toy scenes contain (Cityscapes train ids), for metrics.
TOY_CLASS_IDS: tuple[int, ...] = (ROAD, SIDEWALK, BUILDING, POLE, VEGETATION, TERRAIN, SKY, VEHICLE)

SKY_INSTANCE, ROAD_INSTANCE, TERRAIN_INSTANCE = 0, 1, 2

#: Focal length as a fraction of the image width (HFOV about 71 degrees).
FOCAL_PER_WIDTH = 0.7
#: Box faces nearer than this are clipped, so every box projects in front of the camera.
NEAR_CLIP_M = 0.3
#: How far the street (sidewalks and buildings) extends ahead of the camera.
STREET_LENGTH_M = 300.0
KERB_HEIGHT_M = 0.15


@dataclass(frozen=True)
class SceneStyle:
    """Content and camera statistics of one domain (fixed per domain, not scaled by severity)."""

    vehicle_rate: float  # Poisson mean of vehicles per image
    tree_rate: float  # Poisson mean of street trees per image (gap trees come on top)
    pole_rate: float
    building_occupancy: float  # chance that a street segment holds a building
    building_height_m: tuple[float, float]
    camera_height_m: tuple[float, float]
    pitch_deg: tuple[float, float]  # positive looks down
    principal_row: float  # cy as a fraction of the image height


SCENE_STYLES: dict[str, SceneStyle] = {
    "source": SceneStyle(
        vehicle_rate=3.0, tree_rate=5.0, pole_rate=4.0, building_occupancy=0.8,
        building_height_m=(6.0, 24.0), camera_height_m=(1.3, 1.7), pitch_deg=(-2.0, 2.0),
        principal_row=0.5,
    ),
    "target": SceneStyle(
        vehicle_rate=6.0, tree_rate=2.0, pole_rate=5.0, building_occupancy=0.85,
        building_height_m=(8.0, 30.0), camera_height_m=(1.6, 2.1), pitch_deg=(0.0, 3.0),
        principal_row=0.45,
    ),
}


@dataclass(frozen=True)
class Camera:
    """A pinhole camera `mount_height_m` above the ground, pitched down by `pitch_rad` about x."""

    height: int  # image rows
    width: int  # image columns
    fx: float
    fy: float
    cx: float
    cy: float
    mount_height_m: float
    pitch_rad: float

    def intrinsics(self) -> np.ndarray:
        """K [3, 3] float32 at this image size."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float32
        )


@dataclass(frozen=True)
class Scene:
    """Everything the ray caster needs. Primitive arrays have one row per primitive."""

    camera: Camera
    road_centre_x: float
    road_half_width: float
    boxes: np.ndarray  # N, 6: x0, y0, z0, x1, y1, z1 (min corner, max corner)
    box_instances: np.ndarray  # N
    cylinders: np.ndarray  # M, 5: centre x, centre z, radius, y top, y bottom (y top < y bottom)
    cylinder_instances: np.ndarray  # M
    spheres: np.ndarray  # K, 4: centre x, y, z, radius
    sphere_instances: np.ndarray  # K
    instance_labels: np.ndarray  # I, uint8 class id of each instance
    # Where the camera stands in the frame the scene was sampled in. The primitives are always given
    # relative to the camera; a camera moved along a toy sequence shifts them by minus its position,
    # and the world-anchored appearance (texture, lane dashes) adds it back (`toy_sequence`).
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """The draw of `rng.uniform(low, high)`, low + (high - low) u, bit for bit, at a sixth of its call cost."""
    return low + (high - low) * rng.random()


def _side(rng: np.random.Generator) -> int:
    """-1 or 1, the draw of `rng.choice((-1, 1))` at a fifth of its call cost."""
    return (-1, 1)[rng.integers(2)]


class _SceneBuilder:
    """Collects primitives and instances while a scene is sampled."""

    def __init__(self) -> None:
        self.labels = [SKY, ROAD, TERRAIN]
        self.boxes: list[tuple[float, ...]] = []
        self.box_instances: list[int] = []
        self.cylinders: list[tuple[float, ...]] = []
        self.cylinder_instances: list[int] = []
        self.spheres: list[tuple[float, ...]] = []
        self.sphere_instances: list[int] = []

    def instance(self, label: int) -> int:
        self.labels.append(label)
        return len(self.labels) - 1

    def box(self, lo: tuple[float, float, float], hi: tuple[float, float, float], instance: int) -> None:
        near = max(lo[2], NEAR_CLIP_M)
        if hi[2] > near:
            self.boxes.append((lo[0], lo[1], near, hi[0], hi[1], hi[2]))
            self.box_instances.append(instance)

    def cylinder(self, x: float, z: float, radius: float, y_top: float, y_bottom: float, instance: int) -> None:
        self.cylinders.append((x, z, radius, y_top, y_bottom))
        self.cylinder_instances.append(instance)

    def sphere(self, x: float, y: float, z: float, radius: float, instance: int) -> None:
        self.spheres.append((x, y, z, radius))
        self.sphere_instances.append(instance)

    def build(self, camera: Camera, road_centre_x: float, road_half_width: float) -> Scene:
        def rows(values: list[tuple[float, ...]], width: int) -> np.ndarray:
            return np.array(values, dtype=np.float64).reshape(-1, width)

        def ids(values: list[int]) -> np.ndarray:
            return np.array(values, dtype=np.int32)

        return Scene(
            camera=camera, road_centre_x=road_centre_x, road_half_width=road_half_width,
            boxes=rows(self.boxes, 6), box_instances=ids(self.box_instances),
            cylinders=rows(self.cylinders, 5), cylinder_instances=ids(self.cylinder_instances),
            spheres=rows(self.spheres, 4), sphere_instances=ids(self.sphere_instances),
            instance_labels=np.array(self.labels, dtype=np.uint8),
        )


def sample_camera(rng: np.random.Generator, size: tuple[int, int], style: SceneStyle) -> Camera:
    """A camera at the working size: f = 0.7 W, cx = W / 2, cy from the style, random height/pitch."""
    height, width = size
    focal = FOCAL_PER_WIDTH * width
    return Camera(
        height=height, width=width, fx=focal, fy=focal, cx=width / 2, cy=style.principal_row * height,
        mount_height_m=_uniform(rng, *style.camera_height_m),
        pitch_rad=float(np.deg2rad(_uniform(rng, *style.pitch_deg))),
    )


def sample_scene(rng: np.random.Generator, size: tuple[int, int], style: SceneStyle) -> Scene:
    """Sample one street scene: camera, road, sidewalks, buildings, poles, trees and vehicles."""
    camera = sample_camera(rng, size, style)
    ground = camera.mount_height_m
    builder = _SceneBuilder()
    half_width = _uniform(rng, 3.5, 7.0)
    centre = _uniform(rng, -0.35, 0.35) * half_width
    kerbs = {}
    for side in (-1, 1):
        kerb = centre + side * half_width
        outer = kerb + side * _uniform(rng, 2.0, 4.0)
        kerbs[side] = (kerb, outer)
        walk = builder.instance(SIDEWALK)
        builder.box((min(kerb, outer), ground - KERB_HEIGHT_M, 0.0),
                    (max(kerb, outer), ground, STREET_LENGTH_M), walk)
        _add_buildings(rng, builder, style, ground, side, outer)
    for _ in range(rng.poisson(style.pole_rate)):
        side = _side(rng)
        _add_pole(rng, builder, ground, kerbs[side][0] + side * _uniform(rng, 0.3, 0.6),
                  _uniform(rng, 4.0, 80.0))
    for _ in range(rng.poisson(style.tree_rate)):
        side = _side(rng)
        _add_tree(rng, builder, ground, kerbs[side][1] - side * _uniform(rng, 0.5, 1.0),
                  _uniform(rng, 4.0, 70.0))
    _add_vehicles(rng, builder, style, ground, centre, half_width)
    return builder.build(camera, centre, half_width)


def _add_buildings(
    rng: np.random.Generator, builder: _SceneBuilder, style: SceneStyle, ground: float, side: int, outer: float
) -> None:
    """Box buildings in segments along one side of the street; a gap may hold a tree."""
    z = _uniform(rng, -8.0, 0.0)
    while z < STREET_LENGTH_M * 0.5:
        length = _uniform(rng, 8.0, 25.0)
        front = outer + side * _uniform(rng, 0.0, 3.0)
        back = front + side * _uniform(rng, 8.0, 15.0)
        if rng.random() < style.building_occupancy:
            top = ground - _uniform(rng, *style.building_height_m)
            builder.box((min(front, back), top, z), (max(front, back), ground, z + length),
                        builder.instance(BUILDING))
        elif rng.random() < 0.5 and z + length / 2 > 4.0:
            _add_tree(rng, builder, ground, front + side * 3.0, z + length / 2)
        z += length


def _add_pole(rng: np.random.Generator, builder: _SceneBuilder, ground: float, x: float, z: float) -> None:
    """A pole (r = 0.12 m, 4-8 m tall), with a sign box near its top half the time."""
    top = ground - _uniform(rng, 4.0, 8.0)
    pole = builder.instance(POLE)
    builder.cylinder(x, z, 0.12, top, ground, pole)
    if rng.random() < 0.5:
        builder.box((x - 0.35, top + 0.1, z - 0.17), (x + 0.35, top + 0.8, z - 0.12), pole)


def _add_tree(rng: np.random.Generator, builder: _SceneBuilder, ground: float, x: float, z: float) -> None:
    """A trunk cylinder (2.5-4 m, taller than any camera) under a sphere crown (r 1.5-2.8 m)."""
    tree = builder.instance(VEGETATION)
    trunk_top = ground - _uniform(rng, 2.5, 4.0)
    crown = _uniform(rng, 1.5, 2.8)
    builder.cylinder(x, z, _uniform(rng, 0.15, 0.25), trunk_top, ground, tree)
    builder.sphere(x, trunk_top - 0.6 * crown, z, crown, tree)


def _add_vehicles(
    rng: np.random.Generator, builder: _SceneBuilder, style: SceneStyle, ground: float,
    centre: float, half_width: float,
) -> None:
    """Body and cabin boxes in two driving lanes and two parking lanes, 5-60 m ahead, no overlaps."""
    lanes = (centre - half_width / 2, centre + half_width / 2,
             centre - half_width + 1.1, centre + half_width - 1.1)
    taken: list[tuple[int, float]] = []
    for _ in range(rng.poisson(style.vehicle_rate)):
        lane = int(rng.integers(len(lanes)))
        z = _uniform(rng, 5.0, 60.0)
        width, length = _uniform(rng, 1.7, 2.0), _uniform(rng, 3.9, 4.8)
        body, cabin = _uniform(rng, 0.9, 1.2), _uniform(rng, 0.45, 0.6)
        if any(lane == other and abs(z - other_z) < 6.0 for other, other_z in taken):
            continue
        taken.append((lane, z))
        x = lanes[lane]
        vehicle = builder.instance(VEHICLE)
        builder.box((x - width / 2, ground - body, z), (x + width / 2, ground, z + length), vehicle)
        builder.box((x - width / 2 + 0.1, ground - body - cabin, z + 0.25 * length),
                    (x + width / 2 - 0.1, ground - body, z + 0.8 * length), vehicle)
