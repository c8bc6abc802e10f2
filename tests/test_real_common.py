"""Shared loader machinery: file readers, id lookup, the seeded split (densemtl_lab/data/real_common.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from densemtl_lab.data.real_common import (
    DatasetError,
    check_same_size,
    lookup_ids,
    png_channel,
    read_png,
    read_rgb,
    seeded_split,
)
from densemtl_lab.tasks import IGNORE_INDEX


def test_lookup_ids_maps_and_ignores_the_rest() -> None:
    raw = np.array([[7, 8, 0], [33, 40, 7]], dtype=np.uint8)
    ids = lookup_ids(raw, {7: 0, 8: 1, 33: 18})
    assert ids.dtype == np.int64
    assert ids.tolist() == [[0, 1, IGNORE_INDEX], [18, IGNORE_INDEX, 0]]


def test_16_bit_png_channels_keep_their_values(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint16)
    rgb[..., 0] = [[3, 300, 22], [0, 1, 65535]]  # R: ids above 255 need 16 bits
    rgb[..., 1] = 7
    path = tmp_path / "labels.png"
    cv2.imwrite(str(path), rgb[..., ::-1].copy())  # cv2 writes BGR
    array = read_png(path)
    assert array.dtype == np.uint16
    assert np.array_equal(png_channel(array, 0), rgb[..., 0])
    assert np.array_equal(png_channel(array, 1), rgb[..., 1])
    assert np.array_equal(png_channel(array[..., 0]), array[..., 0])  # single channel: as is


@pytest.mark.parametrize("count, train_count", [(3, 2), (10, 8), (9400, 7520)])
def test_seeded_split_is_80_20_disjoint_and_reproducible(count: int, train_count: int) -> None:
    names = [f"{i:07d}" for i in range(count)][::-1]  # the listing order must not matter
    train = seeded_split(names, "train", seed=42)
    val = seeded_split(names, "val", seed=42)
    assert len(train) == train_count and len(val) == count - train_count
    assert sorted(train + val) == sorted(names) and not set(train) & set(val)
    assert train == sorted(train) and train == seeded_split(sorted(names), "train", seed=42)
    assert seeded_split(names, "all", seed=0) == sorted(names)


def test_seeded_split_depends_on_the_seed() -> None:
    names = [str(i) for i in range(20)]
    assert seeded_split(names, "val", seed=0) != seeded_split(names, "val", seed=1)
    with pytest.raises(DatasetError, match="split='test'"):
        seeded_split(names, "test", seed=0)


def test_readers_name_unreadable_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=f"{broken} is not a readable PNG"):
        read_png(broken)
    with pytest.raises(DatasetError, match=f"{broken} is not a readable image"):
        read_rgb(broken)


def test_check_same_size_names_the_file() -> None:
    check_same_size((2, 3), np.zeros((2, 3, 3)), Path("ok.png"))
    with pytest.raises(DatasetError, match=r"label\.png is 4x2 but its image is 3x2"):
        check_same_size((2, 3), np.zeros((2, 4)), Path("label.png"))
