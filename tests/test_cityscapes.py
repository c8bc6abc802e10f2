"""Cityscapes loader on fixtures written in the official layout (densemtl_lab/data/cityscapes.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from realdata_checks import assert_edges_only_at_label_changes, mapped, normal_errors_deg

from densemtl_lab.data.cityscapes import Cityscapes, disparity_to_depth
from densemtl_lab.data.fixtures import STEREO_BASELINE_M, write_cityscapes
from densemtl_lab.data.real_common import DatasetError
from densemtl_lab.tasks import IGNORE_INDEX

# Scene classes (Cityscapes train ids road 0, sidewalk 1, building 2, pole 5, vegetation 8,
# terrain 9, sky 10, car 13) in each class set; classes left out are ignored.
CLASS_SETS = {
    19: {0: 0, 1: 1, 2: 2, 5: 5, 8: 8, 9: 9, 10: 10, 13: 13},
    16: {0: 0, 1: 1, 2: 2, 5: 5, 8: 8, 10: 9, 13: 12},
    13: {0: 0, 1: 1, 2: 2, 8: 5, 10: 6, 13: 9},
    8: {0: 0, 2: 1, 5: 2, 8: 5, 10: 6, 13: 7},
}


@pytest.fixture
def fixture(tmp_path: Path):
    scenes = write_cityscapes(tmp_path, size=(64, 128), small_images=True)
    return tmp_path, {scene.name: scene for scene in scenes}


def test_splits_follow_the_official_folders(fixture) -> None:
    root, scenes = fixture
    train = Cityscapes(root, "train", size=None)
    val = Cityscapes(root, "val", size=None)
    assert [s.name for s in train.samples] == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019"]
    assert [s.name for s in val.samples] == ["frankfurt/frankfurt_000000_000019"]
    sample = val[0]
    assert sample["domain"] == "cityscapes" and sample["name"] == val.samples[0].name
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, 64, 128)
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert np.array_equal((sample["image"].permute(1, 2, 0).numpy() * 255).round(),
                          scenes[sample["name"]].image)


@pytest.mark.parametrize("num_classes", sorted(CLASS_SETS))
def test_label_ids_map_to_each_class_set(fixture, num_classes: int) -> None:
    root, scenes = fixture
    dataset = Cityscapes(root, "train", size=None, num_classes=num_classes, tasks="S")
    assert dataset.class_ids == tuple(range(num_classes)) and len(dataset.class_names) == num_classes
    assert len(dataset.palette) == num_classes
    sample = dataset[1]
    assert set(sample) == {"image", "semseg", "K", "name", "domain"}
    expected = mapped(scenes[sample["name"]].labels, CLASS_SETS[num_classes])
    assert np.array_equal(sample["semseg"].numpy(), expected)


def test_depth_from_disparity_within_quantisation(fixture) -> None:
    root, scenes = fixture
    sample = Cityscapes(root, "train", size=None, tasks="D")[0]
    scene = scenes[sample["name"]]
    depth = sample["depth"][0].numpy()
    assert np.array_equal(depth > 0, scene.depth > 0)
    valid = scene.depth > 0
    fx = scene.K[0, 0]
    # Half a step of 1/256 px disparity is dz = z^2 / (2 * 256 * B * fx).
    bound = scene.depth[valid] ** 2 / (2 * 256 * STEREO_BASELINE_M * fx)
    assert np.all(np.abs(depth[valid] - scene.depth[valid]) <= bound * 1.01 + 1e-5)
    assert torch.allclose(sample["K"], torch.from_numpy(scene.K))


def test_disparity_formula_by_hand() -> None:
    p = np.array([[0, 1, 257, 513]], dtype=np.uint16)
    depth = disparity_to_depth(p, baseline=0.2, fx=2000.0)
    assert depth.tolist() == [[0.0, 0.0, pytest.approx(400.0), pytest.approx(200.0)]]


def test_derived_normals_and_edges(fixture) -> None:
    root, scenes = fixture
    sample = Cityscapes(root, "train", size=None)[0]
    scene = scenes[sample["name"]]
    # Disparity steps of 1/256 px grow as z^2 in depth: exact near the camera, noisy far away.
    near = normal_errors_deg(sample, scene, max_depth=10.0)
    assert near.size > 500 and near.max() < 0.5
    assert np.median(normal_errors_deg(sample, scene)) < 0.5
    assert_edges_only_at_label_changes(sample)


def test_resize_scales_intrinsics_and_keeps_labels(fixture) -> None:
    root, scenes = fixture
    sample = Cityscapes(root, "val", size=(32, 64))[0]
    scene = scenes[sample["name"]]
    assert sample["semseg"].shape == (32, 64) and sample["depth"].shape == (1, 32, 64)
    assert torch.allclose(sample["K"][:2], torch.from_numpy(scene.K)[:2] / 2)
    assert set(sample["semseg"].unique().tolist()) <= set(CLASS_SETS[16].values()) | {IGNORE_INDEX}
    assert set(sample["edges"].unique().tolist()) == {0.0, 1.0}


def test_small_images_take_full_size_labels(fixture) -> None:
    root, scenes = fixture
    sample = Cityscapes(root, "val", size=None, image_dir="leftImg8bit_small")[0]
    scene = scenes[sample["name"]]
    assert sample["image"].shape == (3, 32, 64) and sample["semseg"].shape == (32, 64)
    expected = mapped(scene.labels[1::2, 1::2], CLASS_SETS[16])  # nearest picks the odd pixels
    assert np.array_equal(sample["semseg"].numpy(), expected)
    assert torch.allclose(sample["K"][:2], torch.from_numpy(scene.K)[:2] / 2)


def test_tasks_limit_what_is_read(fixture) -> None:
    root, _ = fixture
    for folder in ("disparity", "camera"):
        for path in sorted((root / folder).rglob("*.*")):
            path.unlink()
    sample = Cityscapes(root, "val", size=None, tasks=["semseg", "edges"])[0]
    assert {"semseg", "edges"} <= set(sample) and "depth" not in sample
    assert Cityscapes(root, "val", size=None, tasks=())[0].keys() == {"image", "K", "name", "domain"}


def test_missing_folders_name_their_archives(tmp_path: Path) -> None:
    write_cityscapes(tmp_path)
    for folder in ("disparity", "camera"):
        for path in sorted((tmp_path / folder).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(DatasetError, match="disparity_trainvaltest.zip.*camera_trainvaltest.zip"):
        Cityscapes(tmp_path, "train", size=None)


def test_a_missing_file_inside_a_split_is_named(fixture) -> None:
    root, _ = fixture
    missing = root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=f"{missing}.*gtFine_trainvaltest.zip"):
        Cityscapes(root, "train", size=None)


def test_label_of_another_size_is_named(fixture) -> None:
    root, _ = fixture
    label = root / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
    cv2.imwrite(str(label), np.zeros((60, 128), np.uint8))
    with pytest.raises(DatasetError, match=f"{label} is 128x60 but its image is 128x64"):
        Cityscapes(root, "val", size=None)[0]


def test_a_broken_camera_file_is_named(fixture) -> None:
    root, _ = fixture
    camera = root / "camera/val/frankfurt/frankfurt_000000_000019_camera.json"
    camera.write_text(json.dumps({"intrinsic": {"fx": 1.0}}))
    with pytest.raises(DatasetError, match=f"{camera} lacks extrinsic.baseline"):
        Cityscapes(root, "val", size=None)[0]


@pytest.mark.parametrize("options, message", [
    ({"num_classes": 7}, "num_classes=7"),
    ({"image_dir": "rightImg8bit"}, "image_dir='rightImg8bit'"),
    ({"split": "all"}, "split='all'"),
])
def test_bad_options(fixture, options: dict, message: str) -> None:
    root, _ = fixture
    with pytest.raises(DatasetError, match=message):
        Cityscapes(root, **{"split": "train", **options})


def test_ignored_label_ids(fixture) -> None:
    root, _ = fixture
    label = root / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
    ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    ids[:2] = 1  # "ego vehicle": not a train id
    cv2.imwrite(str(label), ids)
    semseg = Cityscapes(root, "val", size=None, tasks="S")[0]["semseg"]
    assert (semseg[:2] == IGNORE_INDEX).all() and (semseg[2:] != IGNORE_INDEX).any()


def test_sequences_add_the_neighbouring_frames_at_the_working_size(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, counts={"train": 1, "val": 1}, sequences=True)
    dataset = Cityscapes(tmp_path, "train", size=(32, 64), tasks="SD", sequence=True)
    sample = dataset[0]
    assert sample["frames"].shape == (2, 3, 32, 64) and sample["frame_ids"].tolist() == [-1, 1]
    assert 0.0 <= float(sample["frames"].min()) and float(sample["frames"].max()) <= 1.0
    assert not torch.equal(sample["frames"][0], sample["image"])  # the camera moved between frames
    single = Cityscapes(tmp_path, "train", size=(32, 64), tasks="SD")[0]
    assert "frames" not in single and torch.equal(single["image"], sample["image"])


def test_a_missing_neighbour_frame_is_named_with_its_archive(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, counts={"train": 1, "val": 1}, sequences=True)
    missing = tmp_path / "leftImg8bit_sequence" / "train" / "aachen" / "aachen_000000_000020_leftImg8bit.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=r"aachen_000000_000020_leftImg8bit\.png is missing.*leftImg8bit_sequence"):
        Cityscapes(tmp_path, "train", size=(32, 64), tasks="SD", sequence=True)
    with pytest.raises(DatasetError, match="image_dir='leftImg8bit'"):
        Cityscapes(tmp_path, "train", image_dir="leftImg8bit_small", sequence=True)
