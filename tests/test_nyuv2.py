"""NYUv2 (NYUD_MT) loader on fixtures in both release variants (densemtl_lab/data/nyuv2.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from realdata_checks import mapped

from densemtl_lab.data.fixtures import write_nyuv2
from densemtl_lab.data.geometry import edges_from_labels
from densemtl_lab.data.nyuv2 import NYUv2
from densemtl_lab.data.real_common import DatasetError
from densemtl_lab.data.transforms import hflip
from densemtl_lab.tasks import IGNORE_INDEX

# Scene classes (Cityscapes train ids) -> NYU40 classes as the fixture writes them: road and
# terrain -> floor 1, sidewalk -> floor mat 19, building -> wall 0, pole -> otherstructure 37,
# vegetation -> otherprop 39, car -> otherfurniture 38; sky is void (ignored).
NYU40 = {0: 1, 1: 19, 2: 0, 5: 37, 8: 39, 9: 1, 13: 38}


@pytest.mark.parametrize("variant", ["npy", "png"])
def test_all_four_tasks_come_from_files(tmp_path: Path, variant: str) -> None:
    scenes = {scene.name: scene for scene in write_nyuv2(tmp_path, variant=variant)}
    dataset = NYUv2(tmp_path, "train", size=None)
    assert dataset.num_classes == 40 and dataset.class_names[0] == "wall"
    assert [s.name for s in dataset.samples] == ["train_0000", "train_0001"]
    assert dataset.samples[0].paths["normals"].suffix == f".{variant}"
    sample = dataset[1]
    scene = scenes[sample["name"]]
    semseg = sample["semseg"].numpy()
    assert np.array_equal(semseg, mapped(scene.labels, NYU40)) and (semseg == IGNORE_INDEX).any()
    assert np.array_equal(sample["depth"][0].numpy(), scene.depth)
    normals = sample["normals"].permute(1, 2, 0).numpy()
    assert np.array_equal(np.abs(normals).sum(-1) > 0, scene.instances != 0)  # 0 on sky only
    tolerance = 0.0 if variant == "npy" else 0.01  # 8-bit png steps
    assert np.abs(normals - scene.normals).max() <= tolerance + 1e-6
    expected_edges = edges_from_labels(torch.from_numpy(mapped(scene.labels, NYU40)))
    assert torch.equal(sample["edges"], expected_edges)
    image_error = np.abs(sample["image"].permute(1, 2, 0).numpy() * 255 - scene.image)
    assert image_error.mean() < (8.0 if variant == "npy" else 1e-3)  # jpg (chroma subsampled) vs png


def test_val_split_and_resize(tmp_path: Path) -> None:
    write_nyuv2(tmp_path, size=(48, 64), counts={"train": 1, "val": 2})
    dataset = NYUv2(tmp_path, "val", size=(24, 32))
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample["normals"].shape == (3, 24, 32) and sample["edges"].shape == (1, 24, 32)
    norms = sample["normals"].norm(dim=0)
    assert torch.allclose(norms[norms > 0], torch.ones(1), atol=1e-5)
    assert set(sample["edges"].unique().tolist()) == {0.0, 1.0}
    assert sample["K"][0, 0].item() == pytest.approx(518.858 * 32 / 560, rel=1e-5)


def test_flip_negates_provided_normals(tmp_path: Path) -> None:
    write_nyuv2(tmp_path)
    sample = NYUv2(tmp_path, "val", size=None, tasks="N")[0]
    flipped = hflip(sample)["normals"]
    assert torch.equal(flipped[0], -sample["normals"][0].flip(-1))
    assert torch.equal(flipped[1:], sample["normals"][1:].flip(-1))


def test_missing_split_list_and_files_are_named(tmp_path: Path) -> None:
    write_nyuv2(tmp_path)
    (tmp_path / "edge/train_0001.npy").unlink()
    with pytest.raises(DatasetError, match=r"edge/train_0001\.npy is missing; sample 'train_0001'"):
        NYUv2(tmp_path, "train", size=None)
    assert len(NYUv2(tmp_path, "train", size=None, tasks="SDN")) == 2
    (tmp_path / "gt_sets/val.txt").unlink()
    with pytest.raises(DatasetError, match=r"gt_sets/val\.txt is missing; extract NYUD_MT\.tgz"):
        NYUv2(tmp_path, "val", size=None)


def test_depth_of_another_size_is_named(tmp_path: Path) -> None:
    write_nyuv2(tmp_path)
    depth = tmp_path / "depth/val_0000.npy"
    np.save(depth, np.ones((10, 64), np.float32))
    with pytest.raises(DatasetError, match=f"{depth} is 64x10 but its image is 64x48"):
        NYUv2(tmp_path, "val", size=None)[0]


def test_a_pickled_array_is_refused(tmp_path: Path) -> None:
    write_nyuv2(tmp_path)
    depth = tmp_path / "depth/val_0000.npy"
    np.save(depth, np.array([{"not": "an array"}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=f"{depth} is not a readable .npy"):
        NYUv2(tmp_path, "val", size=None, tasks="D")[0]
