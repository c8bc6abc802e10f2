"""build_dataset: which split and size each role reads (source training split, adaptation target size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from densemtl_lab.config import DataConfig
from densemtl_lab.data.build import build_dataset
from densemtl_lab.data.fixtures import write_cityscapes, write_synthia


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    synthia, cityscapes = tmp_path_factory.mktemp("synthia"), tmp_path_factory.mktemp("cityscapes")
    write_synthia(synthia, size=(64, 128), count=5)
    write_cityscapes(cityscapes, size=(64, 128), counts={"train": 2, "val": 1})
    return {"synthia": synthia, "cityscapes": cityscapes}


def adaptation_data(roots, **changes) -> DataConfig:
    return DataConfig(dataset="synthia", root=str(roots["synthia"]), size=(64, 128), classes=16,
                      target_dataset="cityscapes", target_root=str(roots["cityscapes"]), **changes)


def test_the_source_trains_on_train_split_or_on_all_of_it(roots):
    train = build_dataset(adaptation_data(roots), "train", "source")
    everything = build_dataset(adaptation_data(roots, train_split="all"), "train", "source")
    val = build_dataset(adaptation_data(roots, train_split="all"), "val", "source")
    assert (len(train), len(val), len(everything)) == (4, 1, 5)  # the seeded 80/20 split, and all
    names = {everything[i]["name"] for i in range(len(everything))}
    assert {train[i]["name"] for i in range(len(train))} | {val[0]["name"]} == names


def test_train_split_never_touches_the_target(roots):
    target = build_dataset(adaptation_data(roots, train_split="all"), "train", "target", tasks=())
    assert len(target) == 2 and target.split == "train"


def test_the_target_has_its_own_working_size(roots):
    data = adaptation_data(roots, target_size=(32, 64))
    assert tuple(build_dataset(data, "val", "target")[0]["image"].shape) == (3, 32, 64)
    assert tuple(build_dataset(data, "train", "target", tasks=())[0]["image"].shape) == (3, 32, 64)
    assert tuple(build_dataset(data, "train", "source")[0]["image"].shape) == (3, 64, 128)
    same = adaptation_data(roots)
    assert tuple(build_dataset(same, "val", "target")[0]["image"].shape) == (3, 64, 128)
