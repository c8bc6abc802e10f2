"""Colourisers: palette lookup, inverse-depth colour map, normals and edges, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl_lab.data.classes import CITYSCAPES_PALETTE
from densemtl_lab.tasks import IGNORE_INDEX, TASK_ORDER, TASKS, UnknownTaskError, decode_prediction
from densemtl_lab.viz import ColouriseError, colourise, default_palette


@pytest.mark.parametrize("task", TASK_ORDER)
def test_every_task_colours_its_decoded_prediction(task):
    raw = torch.randn(1, TASKS[task].out_channels(19), 4, 6)
    picture = colourise(task, decode_prediction(task, raw)[0])
    assert picture.dtype == np.uint8 and picture.shape == (4, 6, 3)


@pytest.mark.parametrize("as_tensor", [True, False])
def test_semseg_uses_the_palette_and_draws_ignored_pixels_black(as_tensor):
    labels = [[0, 13], [IGNORE_INDEX, 2]]
    picture = colourise("semseg", torch.tensor(labels) if as_tensor else np.array(labels))
    assert picture.dtype == np.uint8 and picture.shape == (2, 2, 3)
    expected = [[CITYSCAPES_PALETTE[0], CITYSCAPES_PALETTE[13]], [(0, 0, 0), CITYSCAPES_PALETTE[2]]]
    assert picture.tolist() == [[list(c) for c in row] for row in expected]


def test_semseg_with_a_custom_palette_and_ids_beyond_it():
    picture = colourise("semseg", torch.tensor([[[0, 1, 2]]]), palette=[(1, 2, 3), (4, 5, 6)])
    assert picture.tolist() == [[[1, 2, 3], [4, 5, 6], [0, 0, 0]]]  # id 2 is outside a 2-colour palette


def test_default_palette_extends_cityscapes_with_distinct_colours():
    palette = default_palette(40)
    assert palette[:19] == list(CITYSCAPES_PALETTE) and len(set(palette)) == 40
    assert default_palette(25)[20] == palette[20]  # a class keeps its colour whatever the count


def test_depth_is_brighter_nearer_and_black_where_invalid():
    depth = torch.tensor([[[1.0, 2.0, 5.0, 40.0, 0.0]]])  # 1, 1, W
    picture = colourise("depth", depth)[0].astype(int)
    brightness = picture.sum(axis=1)
    assert brightness[0] > brightness[1] > brightness[2] > brightness[3] > 0
    assert picture[4].tolist() == [0, 0, 0]
    assert colourise("depth", np.zeros((2, 2))).max() == 0  # nothing valid: all black


def test_normals_map_minus_one_to_one_onto_0_to_255():
    normals = torch.zeros(3, 1, 3)
    normals[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    normals[:, 0, 1] = torch.tensor([0.0, -2.0, 0.0])  # normalised first
    picture = colourise("normals", normals)
    assert picture[0].tolist() == [[255, 128, 128], [128, 0, 128], [128, 128, 128]]


def test_edges_are_grey_levels():
    picture = colourise("edges", torch.tensor([[[0.0, 0.5, 1.0]]]))
    assert picture[0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


@pytest.mark.parametrize("task, prediction, message", [
    ("normals", torch.zeros(2, 4, 4), r"normals prediction must be \[3, H, W\], got shape \[2, 4, 4\]"),
    ("depth", torch.zeros(2, 2, 4, 4), r"depth prediction must be \[H, W\] or \[1, H, W\]"),
    ("semseg", np.zeros(4), r"semseg prediction must be"),
])
def test_wrong_shapes_name_the_task(task, prediction, message):
    with pytest.raises(ColouriseError, match=message):
        colourise(task, prediction)


def test_unknown_task():
    with pytest.raises(UnknownTaskError, match="unknown task 'albedo'"):
        colourise("albedo", torch.zeros(4, 4))
