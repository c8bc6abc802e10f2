"""SYNTHIA-RAND-CITYSCAPES loader on fixtures in the official layout (densemtl_lab/data/synthia.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from realdata_checks import assert_edges_only_at_label_changes, mapped, normal_errors_deg

from densemtl_lab.data.fixtures import write_synthia
from densemtl_lab.data.real_common import DatasetError
from densemtl_lab.data.synthia import Synthia

# Scene classes (Cityscapes train ids road 0, sidewalk 1, building 2, pole 5, vegetation 8,
# terrain 9, sky 10, car 13) -> SYNTHIA 16-class ids (terrain is not among them: ignored).
SIXTEEN = {0: 0, 1: 1, 2: 2, 5: 5, 8: 8, 10: 9, 13: 12}
LAYOUTS = [
    {"labels_dir": "GT/LABELS", "depth_dir": "Depth/Depth", "depth_channels": 3},
    {"labels_dir": "parsed_LABELS", "depth_dir": "Depth", "depth_channels": 1},
]


def write(root: Path, **layout) -> dict:
    return {scene.name: scene for scene in write_synthia(root, size=(64, 128), **layout)}


@pytest.mark.parametrize("layout", LAYOUTS, ids=["16bit-labels", "parsed-labels"])
def test_labels_depth_and_derived_maps(tmp_path: Path, layout: dict) -> None:
    scenes = write(tmp_path, **layout)
    dataset = Synthia(tmp_path, "all", size=None)
    assert dataset.labels_dir == layout["labels_dir"] and dataset.depth_dir == layout["depth_dir"]
    for index, name in enumerate(sorted(scenes)):
        sample = dataset[index]
        scene = scenes[name]
        assert sample["name"] == name and sample["domain"] == "synthia"
        assert np.array_equal(sample["semseg"].numpy(), mapped(scene.labels, SIXTEEN))
        depth = sample["depth"][0].numpy()
        assert np.abs(depth - scene.depth).max() <= 0.005 + 1e-6  # centimetre steps
        errors = normal_errors_deg(sample, scene)
        assert errors.size > 1500 and errors.mean() < 0.6
        assert np.percentile(errors, 99) < 5.0  # centimetre steps tilt normals near the camera
        assert_edges_only_at_label_changes(sample)


def test_pillow_would_truncate_the_16_bit_labels(tmp_path: Path) -> None:
    write(tmp_path, **LAYOUTS[0])
    label = tmp_path / "GT/LABELS/0000000.png"
    with Image.open(label) as image:
        pillow_ids = np.asarray(image.convert("RGB"))[..., 0]
    loaded = Synthia(tmp_path, "all", size=None, tasks="S")[0]["semseg"].numpy()
    road = loaded == 0  # SYNTHIA id 3
    assert road.any() and (pillow_ids[road] == 0).all()


def test_intrinsics_are_scaled_per_axis(tmp_path: Path) -> None:
    scenes = write(tmp_path, **LAYOUTS[0])
    sample = Synthia(tmp_path, "all", size=(32, 32), tasks="D")[0]
    # 532.74 px at 1280 x 760, so 532.74 * 32 / 1280 and 532.74 * 32 / 760 at 32 x 32.
    assert sample["K"][0, 0].item() == pytest.approx(532.740352 * 32 / 1280, rel=1e-5)
    assert sample["K"][1, 1].item() == pytest.approx(532.740352 * 32 / 760, rel=1e-5)
    assert sample["K"][1, 2].item() == pytest.approx(16.0)
    assert torch.allclose(Synthia(tmp_path, "all", size=None)[0]["K"],
                          torch.from_numpy(scenes["0000000"].K))


def test_split_is_a_seeded_sorted_80_20(tmp_path: Path) -> None:
    write(tmp_path, **LAYOUTS[0])
    train = [s.name for s in Synthia(tmp_path, "train", size=None).samples]
    val = [s.name for s in Synthia(tmp_path, "val", size=None).samples]
    assert len(train) == 2 and len(val) == 1 and sorted(train + val) == ["0000000", "0000001", "0000002"]
    assert train == [s.name for s in Synthia(tmp_path, "train", size=None).samples]
    vals = {Synthia(tmp_path, "val", size=None, split_seed=seed).samples[0].name for seed in range(10)}
    assert len(vals) > 1


def test_missing_folder_names_the_archive(tmp_path: Path) -> None:
    write(tmp_path, **LAYOUTS[0])
    for path in sorted((tmp_path / "Depth").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "Depth").rmdir()
    with pytest.raises(DatasetError, match=r"Depth/Depth not found: extract SYNTHIA_RAND_CITYSCAPES\.rar"):
        Synthia(tmp_path, "train", size=None)
    assert len(Synthia(tmp_path, "train", size=None, tasks="S")) == 2


def test_missing_label_file_is_named(tmp_path: Path) -> None:
    write(tmp_path, **LAYOUTS[0])
    (tmp_path / "GT/LABELS/0000001.png").unlink()
    with pytest.raises(DatasetError, match=r"0000001\.png is missing; sample '0000001'"):
        Synthia(tmp_path, "all", size=None)


def test_depth_of_another_size_is_named(tmp_path: Path) -> None:
    write(tmp_path, **LAYOUTS[1])
    depth = tmp_path / "Depth/0000002.png"
    cv2.imwrite(str(depth), np.ones((64, 100), np.uint16))
    dataset = Synthia(tmp_path, "all", size=None)
    with pytest.raises(DatasetError, match=f"{depth} is 100x64 but its image is 128x64"):
        dataset[2]


def test_unknown_folder_option(tmp_path: Path) -> None:
    write(tmp_path, **LAYOUTS[0])
    with pytest.raises(DatasetError, match="labels_dir='LABELS'"):
        Synthia(tmp_path, labels_dir="LABELS")
