"""Procedural toy urban scenes with exact labels for all four tasks, in two domains.

Why: the lessons need data that trains in minutes on a laptop CPU, with perfect depth, normals
and edges, and a controllable domain gap for adaptation (docs/benchmarks.md has the timings).

Scene model (`toy_scene.py`): a straight street seen from a car. Ground plane with the road and
terrain beyond it; box sidewalks with 0.15 m kerbs; box buildings in segments along both sides
(gaps show sky or a tree); vehicles (body + cabin boxes) in four lanes 5-60 m ahead; poles
(cylinders, some with a sign box); trees (trunk cylinder under a sphere crown). Sky: no hit.

Camera: pinhole, f = 0.7 W (HFOV about 71 degrees), cx = W / 2, OpenCV frame (x right, y down,
z forward), pitched about x. Every image is rendered directly at `size`, so K is exact there.

Labels (`toy_render.py` ray-casts the primitives analytically):
- `depth`: camera z-depth (not ray length), 0 where unknown: on sky and beyond 80 m (the evaluation
  range; a surface clamped to 80 m would read as a fronto-parallel wall there, at odds with its normal);
- `normals`: analytic unit normals in the camera frame facing the camera, 0 on sky;
- `edges`: 4-neighbour label changes (`geometry.edge_mask`, both sides, 2 px wide);
- `semseg`: eight classes with Cityscapes train ids, so palettes and metrics are shared:

  | class      | train id | source | source bounds | target | target bounds |
  |------------|----------|--------|---------------|--------|---------------|
  | road       | 0        | .328   | .29 - .38     | .367   | .32 - .42     |
  | sidewalk   | 1        | .062   | .045 - .08    | .069   | .05 - .09     |
  | building   | 2        | .362   | .31 - .42     | .386   | .34 - .45     |
  | pole       | 5        | .009   | .005 - .013   | .011   | .006 - .015   |
  | vegetation | 8        | .089   | .065 - .115   | .040   | .025 - .06    |
  | terrain    | 9        | .011   | .006 - .016   | .015   | .008 - .02    |
  | sky        | 10       | .108   | .08 - .135    | .062   | .04 - .08     |
  | vehicle    | 13 (car) | .032   | .018 - .045   | .050   | .035 - .07    |

  Pixel fractions over 200 images (seed 0, train, 128x256; the same to +-.005 at 64x128 and
  32x64). The bounds hold for 200-image sets of other seeds and of both splits (measured: seeds
  0, 3 and 7; tests/test_toy.py checks seed 3, val, 64x128).

Domains, driven by one `severity` s in [0, 1] (the source ignores it):
- source ("synthetic"): Cityscapes palette with per-instance x U(0.8, 1.2) colour jitter per
  channel (a flat palette would make segmentation a colour lookup), Lambertian sun, ambient 0.5.
- target ("real-ish"): the palette lerped by s towards a desaturated, re-tinted one (cars get
  paints); world-space value-noise texture, facade windows and lane marks (strength s); a warm
  tint and weaker ambient; haze I e^(-beta z) + A (1 - e^(-beta z)), beta ~ U(0.005, 0.02) s per m;
  [1, 2, 1] blur lerped by s; Gaussian luminance noise sigma = 0.03 s. Independent of s, the target also has
  other content and camera statistics (`toy_scene.SCENE_STYLES`: more cars, fewer trees, higher
  and down-pitched camera, cy = 0.45 H). At s = 0 the target looks like the source.
  Image statistics over 64 images at 128x256, for source / target at s = 0, .25, .5, 1:
  mean HSV saturation .46 / .45, .33, .27, .20; high-frequency energy (mean |4-neighbour
  Laplacian| of the grey image) .023 / .022, .043, .064, .110; haze (correlation of the dark
  channel, min over RGB, with log depth on building pixels) .05 / .00, .63, .76, .83.

Determinism: sample `index` draws everything from np.random.default_rng([seed, domain_id,
split_id, index]), so it is the same whatever the batch size, worker count or order, and train
and val never share a scene. Images are quantised to 8 bits when rendered, so a dataset written
to disk (`toy_store.py`) reads back byte-identical.
"""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from densemtl_lab.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from densemtl_lab.data.geometry import edge_mask
from densemtl_lab.data.toy_render import Render, render_scene
from densemtl_lab.data.toy_scene import (
    BUILDING, POLE, ROAD, SCENE_STYLES, SIDEWALK, SKY, TERRAIN, TOY_CLASS_IDS, VEGETATION,
    VEHICLE, Scene, sample_scene,
)
from densemtl_lab.data.toy_store import ToyStore
from densemtl_lab.tasks import MAX_DEPTH_M, TASK_ORDER

DOMAINS: tuple[str, ...] = ("source", "target")
SPLITS: tuple[str, ...] = ("train", "val")
#: Image sides must be multiples of this (the encoder downsamples 16x).
SIZE_MULTIPLE = 16


def _palette(recoloured: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """The Cityscapes palette [19, 3] in [0, 1], with some classes recoloured."""
    colours = [recoloured.get(class_id, rgb) for class_id, rgb in enumerate(CITYSCAPES_PALETTE)]
    return np.array(colours, dtype=np.float32) / 255


_PALETTE = _palette({})
_TARGET_PALETTE = _palette({  # desaturated, re-tinted ("real-ish") colours
    ROAD: (95, 92, 98), SIDEWALK: (160, 150, 140), BUILDING: (150, 120, 100), POLE: (90, 95, 100),
    VEGETATION: (55, 90, 45), TERRAIN: (125, 120, 75), SKY: (200, 210, 220),
})
_CAR_PAINTS = np.array([(200, 200, 205), (30, 30, 35), (150, 20, 20), (40, 60, 120), (170, 170, 160)],
                       dtype=np.float32) / 255
_WARM_TINT = np.array([1.1, 1.0, 0.85], dtype=np.float32)
_AIRLIGHT = np.array([0.78, 0.80, 0.82], dtype=np.float32)
_WINDOW_PAINT = np.array([0.15, 0.18, 0.25], dtype=np.float32)
_LANE_PAINT = np.array([0.9, 0.9, 0.88], dtype=np.float32)
_SKY_HAZE_DEPTH_M = 1000.0  # how far the sky is for the haze


def _as_int(value: object) -> int | None:
    """`value` as a plain int when it is an integer (numpy ints too, bools not), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


class ToyConfigError(ValueError):
    """A ToyScenes parameter out of its range."""


@dataclass(frozen=True)
class ToyConfig:
    """What defines a toy dataset: its samples are a pure function of these and the index."""

    length: int
    size: tuple[int, int] = (128, 256)
    domain: str = "source"
    severity: float = 0.5
    seed: int = 0
    split: str = "train"

    def __post_init__(self) -> None:
        length = _as_int(self.length)
        if length is None or length < 1:
            raise ToyConfigError(f"length={self.length!r}: must be an integer of at least 1")
        size = tuple(_as_int(side) for side in self.size) if isinstance(self.size, (tuple, list)) else ()
        if len(size) != 2 or not all(side is not None and side > 0 and side % SIZE_MULTIPLE == 0
                                     for side in size):
            raise ToyConfigError(
                f"size={self.size!r}: height and width must be positive multiples of {SIZE_MULTIPLE}; "
                "use e.g. (128, 256)"
            )
        object.__setattr__(self, "length", length)
        object.__setattr__(self, "size", size)
        if self.domain not in DOMAINS:
            raise ToyConfigError(f"domain={self.domain!r}: use one of {', '.join(DOMAINS)}")
        severity = self.severity
        if isinstance(severity, bool) or not isinstance(severity, numbers.Real) or not 0 <= severity <= 1:
            raise ToyConfigError(f"severity={self.severity!r}: must be a number in [0, 1]")
        seed = _as_int(self.seed)
        if seed is None or seed < 0:
            raise ToyConfigError(f"seed={self.seed!r}: must be a non-negative integer")
        if self.split not in SPLITS:
            raise ToyConfigError(f"split={self.split!r}: use one of {', '.join(SPLITS)}")
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "severity", float(self.severity))

    def rng(self, index: int, stream: int | None = None) -> np.random.Generator:
        """The generator of sample `index`: default_rng([seed, domain_id, split_id, index]); another
        `stream` (an extra key) gives an independent one for draws the sample itself never makes."""
        key = [self.seed, DOMAINS.index(self.domain), SPLITS.index(self.split), index]
        return np.random.default_rng(key if stream is None else [*key, stream])


# --- appearance -----------------------------------------------------------------------------------

def _lambert(render: Render, sun: np.ndarray, ambient: float) -> np.ndarray:
    """H, W float32 shading ambient + (1 - ambient) max(0, n . L); 1 on sky."""
    nx, ny, nz = render.normals_world
    shading = nx * float(sun[0])  # the same arithmetic in place: fewer H x W temporaries
    shading += ny * float(sun[1])
    shading += nz * float(sun[2])
    np.maximum(shading, 0.0, out=shading)
    shading *= 1 - ambient
    shading += ambient
    shading[render.sky] = 1
    return shading


def _sun_direction(rng: np.random.Generator) -> np.ndarray:
    """Unit vector towards the sun: elevation 25-65 degrees, any azimuth (y points down)."""
    elevation, azimuth = rng.uniform(np.deg2rad(25), np.deg2rad(65)), rng.uniform(0, 2 * np.pi)
    return np.array([np.cos(elevation) * np.sin(azimuth), -np.sin(elevation),
                     np.cos(elevation) * np.cos(azimuth)])


def _fraction(values: np.ndarray) -> np.ndarray:
    """values - floor(values): the position inside a unit cell."""
    return values - np.floor(values)


def _value_noise(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear value noise in [0, 1] at (u, v) in cells, from a 64 x 64 lattice tiling the plane."""
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    padded = np.empty((65, 65), dtype=lattice.dtype)  # the lattice wrapped by one row and column
    padded[:64, :64] = lattice
    padded[64, :64] = lattice[0]
    padded[:, 64] = padded[:, 0]
    padded = padded.ravel()
    corner = u0.astype(np.intp)  # flat index of (i0, j0) in `padded`, so no corner wraps around
    corner &= 63
    corner *= 65
    corner += v0.astype(np.intp) & 63
    # The four corners (i0, j0), (i0 + 1, j0), (i0, j0 + 1), (i0 + 1, j0 + 1): offsets 0, 65, 1, 66.
    fu_complement = 1 - fu
    top = padded.take(corner) * fu_complement
    top += padded[65:].take(corner) * fu
    bottom = padded[1:].take(corner) * fu_complement
    bottom += padded[66:].take(corner) * fu
    top *= 1 - fv
    bottom *= fv
    top += bottom
    return top


def _blur121(image: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur of a [3, H, W] image with replicated borders."""
    def along(axis: int, x: np.ndarray) -> np.ndarray:
        out = 2 * x
        inner, before, after = [slice(None)] * 3, [slice(None)] * 3, [slice(None)] * 3
        inner[axis], before[axis], after[axis] = slice(1, -1), slice(None, -2), slice(2, None)
        out[tuple(inner)] += x[tuple(before)] + x[tuple(after)]
        for edge, neighbour in ((0, 1), (-1, -2)):
            index = [slice(None)] * 3
            index[axis] = edge
            other = list(index)
            other[axis] = neighbour
            out[tuple(index)] += x[tuple(index)] + x[tuple(other)]
        return out

    return along(1, along(2, image)) * np.float32(1 / 16)


def shade_source(scene: Scene, render: Render, rng: np.random.Generator) -> np.ndarray:
    """Source appearance [3, H, W] float32: jittered Cityscapes palette under a Lambertian sun."""
    labels = scene.instance_labels
    albedo = _PALETTE[labels] * rng.uniform(0.8, 1.2, (len(labels), 3)).astype(np.float32)  # I, 3
    shading = _lambert(render, _sun_direction(rng), ambient=0.5)
    return np.take(albedo.T, render.instance, axis=1) * shading  # 3, H, W


def _target_albedo(labels: np.ndarray, rng: np.random.Generator, s: np.float32) -> np.ndarray:
    """Per-instance albedo [I, 3]: the palette lerped towards the target one (cars: paints), jittered."""
    jitter = rng.uniform(0.8, 1.2, (len(labels), 3)).astype(np.float32)
    paints = _CAR_PAINTS[rng.integers(len(_CAR_PAINTS), size=len(labels))]
    target = np.where((labels == VEHICLE)[:, None], paints, _TARGET_PALETTE[labels])
    return ((1 - s) * _PALETTE[labels] + s * target) * jitter


def _window_pixels(render: Render, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Flat indices of facade-window pixels: building pixels inside the 3.0 x 3.2 m window grid."""
    building = np.flatnonzero(render.labels == BUILDING)
    column = _fraction(u.ravel()[building] * np.float32(1 / 3.0))
    row = _fraction(v.ravel()[building] * np.float32(1 / 3.2))
    return building[(np.abs(column - 0.5) < 0.2) & (np.abs(row - 0.55) < 0.2)]


def _lane_pixels(scene: Scene, render: Render, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Flat indices of lane-mark pixels: a dashed centre line and both road edges."""
    road = np.flatnonzero(render.labels == ROAD)
    across = np.abs(x.ravel()[road] - scene.road_centre_x)
    dashes = (across < 0.08) & (_fraction(z.ravel()[road] * np.float32(1 / 6.0)) < 0.5)
    return road[dashes | (across > scene.road_half_width - 0.25)]


def _surface_detail(scene: Scene, render: Render, lattice: np.ndarray, image: np.ndarray, s: np.float32) -> np.ndarray:
    """World-space texture (value noise, 0.6 m cells), facade windows and lane marks, weighted by s.

    Writes into `image`, the [3, H, W] albedo, and returns it. Its coordinates are the scene's own,
    so a moved camera (`Scene.origin`) sees the same paint on the same surfaces."""
    points = render.points_world()
    if any(scene.origin):  # a moved camera: back into the scene's frame (the sky stays at 0, as unmoved)
        points[:, ~render.sky] += np.asarray(scene.origin, dtype=np.float32)[:, None]
    x, y, z = points
    nx, ny, _ = render.normals_world
    u = np.where(np.abs(nx) > 0.5, z, x)  # texture axes: x-z on the ground, z-y or x-y on walls
    v = np.where(np.abs(ny) > 0.5, z, y)
    texture = _value_noise(lattice, u * np.float32(1 / 0.6), v * np.float32(1 / 0.6))
    texture -= 0.5  # 1 + s (noise - 0.5) / 2, in place
    texture *= 0.5 * s
    texture += 1
    image *= texture
    flat = image.reshape(3, -1)  # a view: paint only the few pixels that get paint
    painted = ((_WINDOW_PAINT, _window_pixels(render, u, v)), (_LANE_PAINT, _lane_pixels(scene, render, x, z)))
    for paint, pixels in painted:  # windows (building pixels) and lanes (road pixels) never overlap
        flat[:, pixels] += s * (paint[:, None] - flat[:, pixels])
    return image


def shade_target(scene: Scene, render: Render, rng: np.random.Generator, severity: float,
                 noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """Target appearance [3, H, W] float32; every effect grows with `severity` (0 = source look).

    The sensor noise comes from `noise_rng` when given (a frame of a sequence: the scene's look is
    shared, the noise is not), else from `rng` after everything else."""
    s = np.float32(severity)
    albedo = _target_albedo(scene.instance_labels, rng, s)
    sun, beta = _sun_direction(rng), rng.uniform(0.005, 0.02) * severity
    lattice = rng.random((64, 64), dtype=np.float32)
    image = _surface_detail(scene, render, lattice, np.take(albedo.T, render.instance, axis=1), s)  # 3, H, W
    tint = (1 + s * (_WARM_TINT - 1))[:, None, None]
    # In place from here on (the same arithmetic, fewer temporaries).
    transmission = render.depth.astype(np.float32)  # haze: I t + A (1 - t), t = exp(-beta depth)
    np.minimum(transmission, _SKY_HAZE_DEPTH_M, out=transmission)
    transmission *= -np.float32(beta)
    np.exp(transmission, out=transmission)
    image *= _lambert(render, sun, ambient=0.5 - 0.15 * severity)
    image *= tint
    airlight = _AIRLIGHT[:, None, None]
    image -= airlight
    image *= transmission
    image += airlight
    blurred = _blur121(image)
    blurred -= image
    blurred *= s
    image += blurred
    noise = (rng if noise_rng is None else noise_rng).standard_normal(image.shape[1:], dtype=np.float32)  # luminance
    noise *= 0.03 * s
    image += noise
    return image


# --- one sample -----------------------------------------------------------------------------------

def _quantise(image: np.ndarray) -> np.ndarray:
    """uint8 of a float image in [0, 1] (clipped, rounded); overwrites `image` on the way."""
    np.clip(image, 0, 1, out=image)
    image *= 255
    image += 0.5
    return image.astype(np.uint8)


def render_image(config: ToyConfig, scene: Scene, render: Render, rng: np.random.Generator,
                 noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """The uint8 [3, H, W] image of a rendered scene in `config`'s domain (appearance drawn from `rng`,
    the target's sensor noise from `noise_rng` when given)."""
    if config.domain == "source":
        return _quantise(shade_source(scene, render, rng))
    return _quantise(shade_target(scene, render, rng, config.severity, noise_rng))


def render_toy_arrays(config: ToyConfig, index: int) -> dict[str, np.ndarray]:
    """Sample `index` of `config` as numpy arrays, as they are stored on disk.

    image uint8 [3, H, W]; semseg uint8 [H, W]; depth float32 [H, W] (metres, 0 on sky and beyond 80 m);
    normals float32 [3, H, W]; edges uint8 [H, W]; K float32 [3, 3].
    """
    rng = config.rng(index)
    scene = sample_scene(rng, config.size, SCENE_STYLES[config.domain])
    render = render_scene(scene)
    return {
        "image": render_image(config, scene, render, rng),
        "semseg": render.labels,
        "depth": np.where(render.depth <= MAX_DEPTH_M, render.depth, 0.0).astype(np.float32),  # sky: inf
        "normals": render.normals(),
        "edges": edge_mask(render.labels).view(np.uint8),
        "K": scene.camera.intrinsics(),
    }


def arrays_to_sample(arrays: dict[str, np.ndarray], name: str, domain: str) -> dict[str, Any]:
    """Numpy arrays of one sample -> the data contract dict of tensors."""
    height, width = arrays["semseg"].shape
    return {
        "image": torch.from_numpy(np.divide(arrays["image"], np.float32(255), dtype=np.float32)),
        "semseg": torch.from_numpy(arrays["semseg"].astype(np.int64)),
        "depth": torch.from_numpy(arrays["depth"]).reshape(1, height, width),
        "normals": torch.from_numpy(arrays["normals"]),
        "edges": torch.from_numpy(arrays["edges"].astype(np.float32)).reshape(1, height, width),
        "K": torch.from_numpy(arrays["K"]),
        "name": name,
        "domain": domain,
    }


# --- the dataset ----------------------------------------------------------------------------------

class ToyScenes(Dataset):
    """Toy urban scenes returning the data contract, rendered on the fly or read from disk.

    `ToyScenes(length, size=(H, W), domain="source"|"target", severity=0.5, seed=0,
    split="train"|"val", transform=None)`; `ToyScenes.from_disk(path)` reads a dataset written by
    data_scripts/make_toy_dataset.py (the same samples). `transform` is applied to each sample dict.
    """

    num_classes = len(CITYSCAPES_CLASSES)  # 19 outputs; labels are Cityscapes train ids
    class_ids = TOY_CLASS_IDS
    class_names = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE
    tasks = TASK_ORDER

    def __init__(
        self, length: int, size: tuple[int, int] = (128, 256), domain: str = "source",
        severity: float = 0.5, seed: int = 0, split: str = "train",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.config = ToyConfig(length, size, domain, severity, seed, split)
        self.transform = transform
        self.store: ToyStore | None = None

    @classmethod
    def from_disk(
        cls, path: str | Path, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ) -> ToyScenes:
        """The dataset written to `path` by `toy_store.write_toy_dataset`, read instead of rendered."""
        store = ToyStore(path)
        config = ToyConfig(**store.config)
        dataset = cls(config.length, config.size, config.domain, config.severity, config.seed,
                      config.split, transform)
        dataset.store = store
        return dataset

    @property
    def size(self) -> tuple[int, int]:
        return self.config.size

    @property
    def domain(self) -> str:
        return self.config.domain

    def __len__(self) -> int:
        return self.config.length

    def _check_index(self, index: int) -> int:
        index = operator.index(index)
        if not 0 <= index < self.config.length:
            raise IndexError(f"index {index} is out of range for a ToyScenes of length {self.config.length}")
        return index

    def sample_name(self, index: int) -> str:
        """E.g. 'toy-source-train-seed0-000042'."""
        config = self.config
        return f"toy-{config.domain}-{config.split}-seed{config.seed}-{self._check_index(index):06d}"

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """Sample `index` as numpy arrays (see `render_toy_arrays`), from disk when loaded from disk."""
        index = self._check_index(index)
        if self.store is not None:
            return self.store.arrays(index)
        return render_toy_arrays(self.config, index)

    def scene(self, index: int) -> Scene:
        """The sampled scene (camera and primitives) behind sample `index`."""
        return sample_scene(self.config.rng(self._check_index(index)), self.config.size,
                            SCENE_STYLES[self.config.domain])

    def geometry(self, index: int) -> Render:
        """The exact render of sample `index`: depth, instances, classes, normals (for inspection)."""
        return render_scene(self.scene(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = arrays_to_sample(self.arrays(index), self.sample_name(index), f"toy-{self.config.domain}")
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        config = self.config
        where = f", from_disk={str(self.store.root)!r}" if self.store is not None else ""
        return (f"ToyScenes(length={config.length}, size={config.size}, domain={config.domain!r}, "
                f"severity={config.severity}, seed={config.seed}, split={config.split!r}{where})")
