"""Joint transforms on data-contract samples: resize, random crop, horizontal flip (the reference's `dataset/base.py`).

Each transform takes a sample dict (the data contract, docs/real_datasets.md) and returns a new one in which every
map moves together: the image, `semseg`, `depth`, `normals`, `edges`, and the intrinsics `K`.
Keys that are not maps (`name`, `domain`) pass through. The reference resizes RGB with
antialiasing and labels with nearest, and flips with p = 0.5, negating the normals' x.

Random transforms draw from a `torch.Generator`: pass one, or a `seed` to make one. With neither
they draw from torch's global generator, which a DataLoader seeds differently in every worker (a
generator passed in is copied into each worker, so all workers would draw the same numbers).
Loaders derive normals and edges after resizing rather than resizing derived ones, which would
blur boundaries and mix normals of different surfaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from densemtl_lab.data.geometry import crop_intrinsics, resize_nearest, scale_intrinsics

Sample = dict[str, object]
Transform = Callable[[Sample], Sample]

#: Keys of the maps a transform moves; every other key passes through unchanged.
MAP_KEYS: tuple[str, ...] = ("image", "semseg", "depth", "normals", "edges", "frames")
#: The maps resized as images (bilinear, antialiased): frame 0 and a sequence sample's neighbours [S, 3, H, W].
_IMAGE_KEYS = ("image", "frames")
#: Mirroring the x axis of a camera frame: a pose T becomes M T M (M its own inverse).
_MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


class TransformError(ValueError):
    """A transform parameter that cannot apply to a sample."""


def map_size(sample: Sample) -> tuple[int, int]:
    """(H, W) of the sample's maps; raises if they disagree."""
    sizes = {tuple(sample[key].shape[-2:]) for key in MAP_KEYS if key in sample}
    if len(sizes) != 1:
        raise TransformError(f"sample maps must share one size, got {sorted(sizes)}; "
                             "resize them together before transforming")
    return sizes.pop()


def _check_size(size: Iterable[int], parameter: str) -> tuple[int, int]:
    height, width = (int(value) for value in size)
    if height < 1 or width < 1:
        raise TransformError(f"{parameter}={tuple(size)} must be two positive ints (H, W)")
    return height, width


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator | None:
    if seed is not None and generator is not None:
        raise TransformError("pass either seed= or generator=, not both")
    if seed is not None:
        return torch.Generator().manual_seed(seed)
    return generator


@dataclass
class Compose:
    """Apply transforms in order."""

    transforms: tuple[Transform, ...]

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample


class Resize:
    """Resize every map to `size` (H, W): RGB bilinear with antialiasing (the neighbouring `frames` of a
    sequence sample too), labels nearest; K scaled (poses between frames do not change)."""

    def __init__(self, size: Iterable[int]) -> None:
        self.size = _check_size(size, "size")

    def __call__(self, sample: Sample) -> Sample:
        old_size = map_size(sample)
        if old_size == self.size:
            return dict(sample)
        out = dict(sample)
        for key in MAP_KEYS:
            if key not in sample:
                continue
            if key in _IMAGE_KEYS:
                images = sample[key] if key == "frames" else sample[key].unsqueeze(0)  # N, 3, H, W
                resized = F.interpolate(images, size=self.size, mode="bilinear",
                                        align_corners=False, antialias=True).clamp(0.0, 1.0)
                out[key] = resized if key == "frames" else resized[0]
            else:
                out[key] = resize_nearest(sample[key], self.size)
        if "K" in sample:
            out["K"] = scale_intrinsics(sample["K"], old_size, self.size)
        return out


def crop(sample: Sample, top: int, left: int, size: tuple[int, int]) -> Sample:
    """Cut the window [top : top + H, left : left + W] out of every map; K's principal point moves."""
    height, width = size
    out = dict(sample)
    for key in MAP_KEYS:
        if key in sample:
            out[key] = sample[key][..., top:top + height, left:left + width]
    if "K" in sample:
        out["K"] = crop_intrinsics(sample["K"], top, left)
    return out


class RandomCrop:
    """Crop a random window of `size` (H, W), the same window for every map."""

    def __init__(self, size: Iterable[int], seed: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.size = _check_size(size, "size")
        self.generator = _generator(seed, generator)

    def __call__(self, sample: Sample) -> Sample:
        height, width = map_size(sample)
        if self.size[0] > height or self.size[1] > width:
            raise TransformError(f"RandomCrop size={self.size} is larger than the sample "
                                 f"({height}, {width}); resize first or crop smaller")
        top = int(torch.randint(height - self.size[0] + 1, (1,), generator=self.generator))
        left = int(torch.randint(width - self.size[1] + 1, (1,), generator=self.generator))
        return crop(sample, top, left, self.size)


def hflip(sample: Sample) -> Sample:
    """Mirror every map left-right: normals' x is negated where valid, K's cx -> W - cx, and a sequence's
    poses (T_{f<-0}) are mirrored too (M T M, M = diag(-1, 1, 1, 1))."""
    out = dict(sample)
    for key in MAP_KEYS:
        if key in sample:
            out[key] = sample[key].flip(-1)
    if "normals" in sample:
        normals = out["normals"]  # 3, H, W
        valid = normals.ne(0).any(dim=0)
        out["normals"] = torch.cat([torch.where(valid, -normals[0], normals[0])[None], normals[1:]])
    if "K" in sample:
        width = map_size(sample)[1]
        mirrored = sample["K"].clone()
        mirrored[0, 2] = width - mirrored[0, 2]  # pixel centre u + .5 -> W - (u + .5)
        out["K"] = mirrored
    if "poses" in sample:
        out["poses"] = _MIRROR_X @ sample["poses"] @ _MIRROR_X
    return out


class RandomHorizontalFlip:
    """Apply `hflip` with probability `p` (the reference's only augmentation, p = 0.5)."""

    def __init__(self, p: float = 0.5, seed: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise TransformError(f"p={p} must lie in [0, 1]")
        self.p = p
        self.generator = _generator(seed, generator)

    def __call__(self, sample: Sample) -> Sample:
        if float(torch.rand((), generator=self.generator)) < self.p:
            return hflip(sample)
        return dict(sample)
