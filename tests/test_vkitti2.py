"""Virtual KITTI 2 loader on fixtures in the official layout (densemtl_lab/data/vkitti2.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from realdata_checks import assert_edges_only_at_label_changes, mapped, normal_errors_deg

from densemtl_lab.data.fixtures import write_vkitti2
from densemtl_lab.data.real_common import DatasetError
from densemtl_lab.data.vkitti2 import VKITTI2_COLOURS, VirtualKitti2, decode_classes
from densemtl_lab.tasks import IGNORE_INDEX

# Scene classes (Cityscapes train ids road 0, sidewalk 1 (written as misc), building 2, pole 5,
# vegetation 8, terrain 9, sky 10, car 13) in each class set; classes left out are ignored.
CLASS_SETS = {14: {0: 5, 1: 10, 2: 4, 5: 9, 8: 3, 9: 0, 10: 1, 13: 12},
              8: {0: 0, 2: 1, 5: 2, 8: 5, 10: 6, 13: 7}}
CLASSGT = "Scene01/15-deg-left/frames/classSegmentation/Camera_0/classgt_00000.png"


@pytest.fixture
def fixture(tmp_path: Path):
    return tmp_path, {scene.name: scene for scene in write_vkitti2(tmp_path)}


@pytest.mark.parametrize("num_classes", [14, 8])
def test_colours_decode_to_each_class_set(fixture, num_classes: int) -> None:
    root, scenes = fixture
    dataset = VirtualKitti2(root, "all", size=None, num_classes=num_classes, tasks="S")
    assert len(dataset.class_names) == len(dataset.palette) == num_classes
    for index, sample_files in enumerate(dataset.samples):
        semseg = dataset[index]["semseg"].numpy()
        assert np.array_equal(semseg, mapped(scenes[sample_files.name].labels, CLASS_SETS[num_classes]))


def test_decode_by_hand() -> None:
    rgb = np.array([[VKITTI2_COLOURS[5], (0, 0, 0), (1, 2, 3)]], dtype=np.uint8)
    table = {int(c[0]) << 16 | int(c[1]) << 8 | int(c[2]): i for i, c in enumerate(VKITTI2_COLOURS)}
    table[0] = IGNORE_INDEX
    ids, unknown = decode_classes(rgb, table)
    assert ids.tolist() == [[5, IGNORE_INDEX, IGNORE_INDEX]] and unknown.tolist() == [[False, False, True]]


def test_depth_sky_is_invalid_and_the_rest_within_a_centimetre(fixture) -> None:
    root, scenes = fixture
    sample = VirtualKitti2(root, "all", size=None, tasks="D")[0]
    scene = scenes[sample["name"]]
    depth = sample["depth"][0].numpy()
    assert np.array_equal(depth == 0, scene.depth == 0) and (depth == 0).any()
    assert np.abs(depth - scene.depth).max() <= 0.005 + 1e-6


def test_derived_normals_and_edges(fixture) -> None:
    root, scenes = fixture
    dataset = VirtualKitti2(root, "all", size=None)
    sample = dataset[1]
    errors = normal_errors_deg(sample, scenes[sample["name"]])
    assert errors.size > 1500 and errors.mean() < 0.6
    assert np.percentile(errors, 99) < 5.0  # centimetre steps tilt normals near the camera
    assert_edges_only_at_label_changes(sample)
    assert torch.allclose(sample["K"], torch.from_numpy(scenes[sample["name"]].K), atol=1e-4)


def test_intrinsics_fall_back_to_the_constant(tmp_path: Path) -> None:
    write_vkitti2(tmp_path, size=(75, 248), intrinsics_file=False)
    K = VirtualKitti2(tmp_path, "all", size=None, tasks="S")[0]["K"]
    assert K[0, 0].item() == pytest.approx(725.0087 * 248 / 1242, rel=1e-5)
    assert K[1, 2].item() == pytest.approx(187.0 * 75 / 375, rel=1e-5)


def test_split_scenes_and_variation_options(tmp_path: Path) -> None:
    write_vkitti2(tmp_path, frames={"Scene01": 3, "Scene02": 2}, variation="clone", camera="Camera_1")
    options = {"variation": "clone", "camera": "Camera_1", "size": None}
    train = VirtualKitti2(tmp_path, "train", **options)
    val = VirtualKitti2(tmp_path, "val", **options)
    names = sorted(s.name for s in train.samples + val.samples)
    assert len(train) == 4 and len(val) == 1
    assert names == ["Scene01/00000", "Scene01/00001", "Scene01/00002", "Scene02/00000", "Scene02/00001"]
    only = VirtualKitti2(tmp_path, "all", scenes=["Scene02"], **options)
    assert [s.name for s in only.samples] == ["Scene02/00000", "Scene02/00001"]
    with pytest.raises(DatasetError, match=r"Scene03.*pick from \['Scene01', 'Scene02'\]"):
        VirtualKitti2(tmp_path, "all", scenes=["Scene03"], **options)
    with pytest.raises(DatasetError, match="15-deg-left/frames/rgb/Camera_0 not found: extract vkitti_2.0.3_rgb.tar"):
        VirtualKitti2(tmp_path, "all", size=None)


def paint_unknown_colour(root: Path) -> Path:
    path = root / CLASSGT
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    bgr[0, :3] = (3, 2, 1)  # RGB (1, 2, 3): in no class
    bgr[1, :2] = 0  # Undefined black: always ignored
    cv2.imwrite(str(path), bgr)
    return path


def test_unknown_colour_raises_naming_file_and_colour(fixture) -> None:
    root, _ = fixture
    path = paint_unknown_colour(root)
    dataset = VirtualKitti2(root, "all", size=None)
    with pytest.raises(DatasetError, match=rf"{path} has 3 pixels .* RGB \(1, 2, 3\)"):
        dataset[0]


def test_unknown_colour_can_be_ignored_and_counted(fixture) -> None:
    root, _ = fixture
    paint_unknown_colour(root)
    dataset = VirtualKitti2(root, "all", size=None, unknown_colours="ignore")
    sample, counts = dataset.read_resized(0)
    assert counts == {"unknown_colour_pixels": 3}
    assert (sample["semseg"][0, :3] == IGNORE_INDEX).all() and (sample["semseg"][1, :2] == IGNORE_INDEX).all()
    assert (sample["semseg"][2:] != IGNORE_INDEX).all()


def test_class_image_of_another_size_is_named(fixture) -> None:
    root, _ = fixture
    path = root / CLASSGT
    cv2.imwrite(str(path), np.zeros((40, 160, 3), np.uint8))
    with pytest.raises(DatasetError, match=f"{path} is 160x40 but its image is 160x48"):
        VirtualKitti2(root, "all", size=None)[0]


@pytest.mark.parametrize("options, message", [
    ({"num_classes": 19}, "num_classes=19"),
    ({"unknown_colours": "drop"}, "unknown_colours='drop'"),
])
def test_bad_options(fixture, options: dict, message: str) -> None:
    root, _ = fixture
    with pytest.raises(DatasetError, match=message):
        VirtualKitti2(root, **options)
