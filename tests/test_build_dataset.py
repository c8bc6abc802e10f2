"""build_dataset: the split, size, loader options and prepared cache that each role reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from densemtl_lab.config import ConfigError, DataConfig
from densemtl_lab.data.build import build_dataset
from densemtl_lab.data.fixtures import write_cityscapes, write_synthia
from densemtl_lab.data.prepare import PrepareConfig, PreparedDataset, prepare


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


# --- loader options and prepared caches -------------------------------------------------------------------

def test_loader_options_reach_the_loader(tmp_path):
    write_cityscapes(tmp_path, size=(64, 128), small_images=True)
    data = DataConfig(dataset="cityscapes", root=str(tmp_path), size=(32, 64),
                      options={"image_dir": "leftImg8bit_small"})
    assert build_dataset(data, "val").image_dir == "leftImg8bit_small"
    assert build_dataset(DataConfig(dataset="cityscapes", root=str(tmp_path), size=(32, 64)), "val").image_dir \
        == "leftImg8bit"


@pytest.mark.parametrize("options, message", [
    ({"colour": "red"}, r"data.options names colour, which 'synthia' does not take; its options are "
                        r"depth_dir, labels_dir, split_seed"),
    ({"num_classes": 16}, r"data.options names num_classes, .* \(classes: data.classes\)"),
])
def test_unknown_loader_options_are_refused_with_the_valid_ones(roots, options, message):
    with pytest.raises(ConfigError, match=message):
        build_dataset(adaptation_data(roots, options=options), "train", "source")


def test_target_options_apply_to_the_target_only(roots):
    with pytest.raises(ConfigError, match="data.target_options names split_seed, which 'cityscapes' does not"):
        build_dataset(adaptation_data(roots, target_options={"split_seed": 1}), "val", "target")
    assert len(build_dataset(adaptation_data(roots, options={"split_seed": 1}), "val", "source")) == 1


@pytest.fixture(scope="module")
def synthia_cache(roots, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare(PrepareConfig("synthia", roots["synthia"], out, size=(32, 64)), progress=False)
    return out


def test_a_prepared_cache_is_read_as_the_dataset(synthia_cache):
    data = DataConfig(dataset="synthia", root=str(synthia_cache), size=(32, 64), classes=16)
    dataset = build_dataset(data, "train")
    assert isinstance(dataset, PreparedDataset) and len(dataset) == 4
    expected = PreparedDataset(synthia_cache, "train")[0]
    assert torch.equal(dataset[0]["semseg"], expected["semseg"]) and dataset[0]["name"] == expected["name"]


@pytest.mark.parametrize("changes, message", [
    ({"size": (64, 128)}, r"caches synthia at 32x64, but the working size is 64x128; set the size to \[32, 64\]"),
    ({"dataset": "vkitti2", "classes": None}, r"is a prepared cache of 'synthia', not of 'vkitti2'"),
    ({"options": {"split_seed": 7}}, r"was prepared with other loader options \(split_seed=42, asked 7\)"),
])
def test_a_prepared_cache_of_other_settings_is_refused(synthia_cache, changes, message):
    values = {"dataset": "synthia", "root": str(synthia_cache), "size": (32, 64), "classes": 16, **changes}
    with pytest.raises(ConfigError, match=message):
        build_dataset(DataConfig(**values), "train")
