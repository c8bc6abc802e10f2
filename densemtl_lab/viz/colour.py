"""Colourisers: one prediction or label of a task -> an 8-bit RGB picture (H x W x 3).

- semseg: a palette lookup of class ids (Cityscapes colours by default); the ignore index is black.
- depth: magma on inverse depth (near is bright), scaled between the 2nd and 98th percentiles of the
  valid pixels of this picture; invalid depth (0) is black.
- normals: (n + 1) / 2 per channel, the usual x -> red, y -> green, z -> blue picture; invalid
  (all-zero) normals come out mid-grey.
- edges: the edge probability (or label) as grey levels.
The task registry names each task's colouriser (`TaskSpec.colour`); `colourise` looks it up.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib import colormaps

from densemtl_lab.data.classes import CITYSCAPES_PALETTE, palette_for
from densemtl_lab.tasks import IGNORE_INDEX, TASKS, UnknownTaskError

ArrayLike = np.ndarray | torch.Tensor
Palette = Sequence[Sequence[int]]


class ColouriseError(ValueError):
    """A prediction that a colouriser cannot draw (wrong shape or values)."""


def _as_map(task: str, prediction: ArrayLike, channels: int) -> np.ndarray:
    """A [H, W] (channels 1) or [channels, H, W] float/int numpy array; a leading 1 is dropped."""
    array = prediction.detach().cpu().numpy() if torch.is_tensor(prediction) else np.asarray(prediction)
    if channels == 1 and array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    expected = 2 if channels == 1 else 3
    if array.ndim != expected or (channels > 1 and array.shape[0] != channels):
        shape = "[H, W] or [1, H, W]" if channels == 1 else f"[{channels}, H, W]"
        raise ColouriseError(f"{task} prediction must be {shape}, got shape {list(array.shape)}")
    return array


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Cityscapes colours for ids < 19, distinct generated colours beyond (e.g. NYUv2's 40 classes)."""
    extra = palette_for(tuple(f"class {index}" for index in range(len(CITYSCAPES_PALETTE), num_classes)))
    return [*CITYSCAPES_PALETTE, *extra][:max(num_classes, 1)]


def colour_palette(labels: ArrayLike, palette: Palette | None = None) -> np.ndarray:
    """Class ids [H, W] -> RGB; ids outside the palette (the ignore index) are black."""
    ids = _as_map("semseg", labels, 1).astype(np.int64)
    valid_ids = ids[(ids >= 0) & (ids != IGNORE_INDEX)]
    if palette is None:
        palette = default_palette(int(valid_ids.max()) + 1 if valid_ids.size else 1)
    table = np.zeros((len(palette) + 1, 3), dtype=np.uint8)  # the last row is black
    table[:-1] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lookup = np.where((ids >= 0) & (ids < len(palette)), ids, len(palette))
    return table[lookup]


def colour_depth(depth_m: ArrayLike) -> np.ndarray:
    """Metric depth [H, W] (0 = invalid) -> magma on inverse depth; invalid pixels black."""
    depth = _as_map("depth", depth_m, 1).astype(np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    picture = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return picture
    inverse = 1.0 / depth[valid]
    low, high = np.percentile(inverse, [2, 98])
    scaled = np.clip((inverse - low) / max(high - low, 1e-12), 0.0, 1.0)
    picture[valid] = (colormaps["magma"](scaled)[:, :3] * 255.0 + 0.5).astype(np.uint8)
    return picture


def colour_normals(normals: ArrayLike) -> np.ndarray:
    """Unit normals [3, H, W] -> RGB = (n + 1) / 2; the prediction is normalised first."""
    vectors = _as_map("normals", normals, 3).astype(np.float64)
    length = np.linalg.norm(vectors, axis=0, keepdims=True)
    unit = np.where(length > 0, vectors / np.maximum(length, 1e-12), 0.0)
    return ((unit.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)


def colour_edges(edges: ArrayLike) -> np.ndarray:
    """Edge probability or label [H, W] in [0, 1] -> grey levels (edges white)."""
    grey = (_as_map("edges", edges, 1).astype(np.float64).clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


#: Colouriser name (tasks.TaskSpec.colour) -> function.
COLOURISERS: dict[str, Callable[..., np.ndarray]] = {
    "palette": colour_palette, "depth": colour_depth, "normals": colour_normals, "edges": colour_edges,
}


def colourise(task: str, prediction: ArrayLike, palette: Palette | None = None) -> np.ndarray:
    """A task's prediction in label units (tasks.decode_prediction) -> uint8 [H, W, 3].

    `palette` (a list of RGB triples indexed by class id) applies to semseg only.
    """
    if task not in TASKS:
        raise UnknownTaskError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    colouriser = COLOURISERS[TASKS[task].colour]
    return colouriser(prediction, palette) if colouriser is colour_palette else colouriser(prediction)
