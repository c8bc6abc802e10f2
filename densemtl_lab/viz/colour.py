"""Colourisers: one prediction or label of a task -> an 8-bit RGB picture (H x W x 3).

Each task draws its own maps (`Task.colourise` in densemtl_lab.tasks): semseg a palette lookup,
depth magma on inverse depth, normals (n + 1) / 2, edges grey levels. `colourise` looks the task up.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from densemtl_lab.data.classes import default_palette
from densemtl_lab.tasks import ColouriseError, get_task

Palette = Sequence[Sequence[int]]

__all__ = ["ColouriseError", "Palette", "colourise", "default_palette"]


def colourise(task: str, prediction: Any, palette: Palette | None = None) -> np.ndarray:
    """A task's prediction in label units (tasks.decode_prediction) -> uint8 [H, W, 3].

    `palette` (a list of RGB triples indexed by class id) applies to tasks that predict classes.
    """
    return get_task(task).colourise(prediction, palette)
