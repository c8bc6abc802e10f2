"""ToyScenes: the data contract, exact labels, determinism, class bounds and the domain gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import densemtl_lab.data.toy as toy
from densemtl_lab.data import TOY_CLASS_IDS, ToyScenes
from densemtl_lab.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from densemtl_lab.data.geometry import normals_from_depth
from densemtl_lab.data.toy import ToyConfigError
from densemtl_lab.tasks import TASK_ORDER

SIZE = (64, 128)


def neighbourhood_constant(values: np.ndarray) -> np.ndarray:
    """H, W bool: the 3x3 neighbourhood holds one value (the 1-px border is False)."""
    height, width = values.shape
    centre = values[1:-1, 1:-1]
    same = np.ones(centre.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            same &= values[1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx] == centre
    return np.pad(same, 1)


def no_crease(normals: np.ndarray, min_cos: float = 0.985) -> np.ndarray:
    """H, W bool: every normal of the 3x3 neighbourhood is within acos(min_cos) of the centre."""
    _, height, width = normals.shape
    centre = normals[:, 1:-1, 1:-1]
    smooth = np.ones(centre.shape[1:], dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            smooth &= (normals[:, 1 + dy:height - 1 + dy, 1 + dx:width - 1 + dx] * centre).sum(axis=0) >= min_cos
    return np.pad(smooth, 1)


def image_statistics(dataset: ToyScenes, count: int) -> dict[str, float]:
    """Mean HSV saturation, high-frequency energy and haze (the toy module docstring's definitions)."""
    saturation, energy, haze = [], [], []
    for index in range(count):
        arrays = dataset.arrays(index)
        image = arrays["image"].astype(np.float32) / 255
        brightest = np.maximum(np.maximum(image[0], image[1]), image[2])
        dark = np.minimum(np.minimum(image[0], image[1]), image[2])  # the dark channel
        saturation.append(np.mean((brightest - dark) / np.maximum(brightest, 1e-6)))
        grey = image.mean(axis=0)
        laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
        energy.append(np.abs(laplacian).mean())
        building = (arrays["semseg"] == 2) & (arrays["depth"] > 0)
        if building.sum() > 20:
            haze.append(np.corrcoef(dark[building], np.log(arrays["depth"][building]))[0, 1])
    return {"saturation": float(np.mean(saturation)), "energy": float(np.mean(energy)),
            "haze": float(np.nanmean(haze))}


def documented_class_bounds(domain: str) -> dict[int, tuple[float, float]]:
    """Class id -> (low, high) parsed from the table in the toy module docstring."""
    column = {"source": 3, "target": 5}[domain]
    bounds = {}
    for line in toy.__doc__.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1].split(" ")[0].isdigit():  # a class row: name | id | ...
            low, high = (float(part) for part in cells[column].split("-"))
            bounds[int(cells[1].split(" ")[0])] = (low, high)
    return bounds


# --- the contract -----------------------------------------------------------------------------------

@pytest.mark.parametrize("domain", ["source", "target"])
def test_sample_follows_the_data_contract(domain):
    dataset = ToyScenes(3, SIZE, domain=domain, severity=0.7, seed=4, split="val")
    sample = dataset[2]
    assert set(sample) == {"image", "semseg", "depth", "normals", "edges", "K", "name", "domain"}
    shapes = {"image": (3, *SIZE), "semseg": SIZE, "depth": (1, *SIZE), "normals": (3, *SIZE),
              "edges": (1, *SIZE), "K": (3, 3)}
    dtypes = {"image": torch.float32, "semseg": torch.int64, "depth": torch.float32,
              "normals": torch.float32, "edges": torch.float32, "K": torch.float32}
    for key, shape in shapes.items():
        assert sample[key].shape == shape and sample[key].dtype == dtypes[key], key
    assert 0 <= sample["image"].min() and sample["image"].max() <= 1
    assert set(sample["semseg"].unique().tolist()) <= set(TOY_CLASS_IDS)
    sky = sample["semseg"] == 10
    depth = sample["depth"][0]
    unknown = sky | torch.from_numpy(dataset.geometry(2).depth > 80)  # beyond the evaluation range
    assert (depth[unknown] == 0).all() and (depth[~unknown] > 0).all() and depth.max() <= 80
    length = sample["normals"].norm(dim=0)
    assert torch.allclose(length[~sky], torch.ones(()), atol=1e-5) and (length[sky] == 0).all()
    assert set(sample["edges"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sample["K"], torch.from_numpy(dataset.scene(2).camera.intrinsics()))
    assert sample["K"][0, 0] == pytest.approx(0.7 * SIZE[1])
    assert sample["name"] == f"toy-{domain}-val-seed4-000002"
    assert sample["domain"] == f"toy-{domain}"


def test_class_tables_for_metrics_and_pictures():
    dataset = ToyScenes(1, SIZE)
    assert dataset.num_classes == 19
    assert dataset.class_ids == TOY_CLASS_IDS == (0, 1, 2, 5, 8, 9, 10, 13)
    assert dataset.class_names == CITYSCAPES_CLASSES and dataset.palette == CITYSCAPES_PALETTE
    assert dataset.tasks == TASK_ORDER == ("semseg", "depth", "normals", "edges")
    assert len(dataset) == 1 and dataset.size == SIZE and dataset.domain == "source"


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"size": (60, 128)}, "size="),
        ({"size": (64, 100)}, "size="),
        ({"size": (64,)}, "size="),
        ({"domain": "real"}, "domain="),
        ({"severity": 1.5}, "severity="),
        ({"severity": -0.1}, "severity="),
        ({"severity": float("nan")}, "severity="),
        ({"length": 0}, "length="),
        ({"split": "test"}, "split="),
        ({"seed": -1}, "seed="),
    ],
)
def test_bad_parameters_raise_a_one_line_error_naming_them(kwargs, parameter):
    arguments = {"length": 4, "size": SIZE} | kwargs
    with pytest.raises(ToyConfigError) as error:
        ToyScenes(**arguments)
    message = str(error.value)
    assert message.startswith(parameter) and "\n" not in message
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("index", [-1, 4, 10])
def test_index_out_of_range(index):
    with pytest.raises(IndexError, match="out of range"):
        ToyScenes(4, SIZE)[index]


def test_transform_is_applied_to_the_sample():
    def flip(sample):
        return sample | {"image": sample["image"].flip(-1)}

    plain, flipped = ToyScenes(2, SIZE)[1], ToyScenes(2, SIZE, transform=flip)[1]
    assert torch.equal(flipped["image"], plain["image"].flip(-1))
    assert torch.equal(flipped["depth"], plain["depth"])


# --- determinism ------------------------------------------------------------------------------------

def test_the_same_seed_gives_byte_identical_samples():
    first, second = ToyScenes(3, SIZE, "target", seed=9), ToyScenes(3, SIZE, "target", seed=9)
    for index in (2, 0, 1):  # any order
        a, b = first.arrays(index), second.arrays(index)
        assert all(a[key].tobytes() == b[key].tobytes() for key in a)
    other = ToyScenes(3, SIZE, "target", seed=10).arrays(0)
    assert other["image"].tobytes() != first.arrays(0)["image"].tobytes()


def test_workers_and_batch_sizes_do_not_change_the_samples():
    dataset = ToyScenes(6, (32, 64), "target", seed=2)
    single = list(DataLoader(dataset, batch_size=1, num_workers=0))
    batched = list(DataLoader(dataset, batch_size=3, num_workers=2))
    for key in ("image", "semseg", "depth", "normals", "edges", "K"):
        assert torch.equal(torch.cat([batch[key] for batch in single]), torch.cat([batch[key] for batch in batched]))
    assert [name for batch in batched for name in batch["name"]] == [dataset.sample_name(i) for i in range(6)]


def test_train_and_val_share_no_scene():
    train, val = ToyScenes(40, (32, 64), split="train"), ToyScenes(40, (32, 64), split="val")
    train_depths = {train.arrays(i)["depth"].tobytes() for i in range(40)}
    assert not train_depths & {val.arrays(i)["depth"].tobytes() for i in range(40)}
    assert len(train_depths) == 40


# --- exact labels -------------------------------------------------------------------------------------

def test_rendered_normals_agree_with_normals_from_the_rendered_depth():
    angles, kept, total = [], 0, 0
    for domain in ("source", "target"):  # 200 images
        dataset = ToyScenes(100, SIZE, domain=domain, seed=1)
        for index in range(len(dataset)):
            sample, render = dataset[index], dataset.geometry(index)
            derived, valid = normals_from_depth(sample["depth"], sample["K"])
            rendered = sample["normals"].numpy()
            keep = valid[0].numpy() & neighbourhood_constant(render.primitive) & no_crease(rendered)
            cosine = np.clip((derived.numpy() * rendered).sum(axis=0)[keep], -1, 1)
            angles.append(np.degrees(np.arccos(cosine)))
            kept, total = kept + keep.sum(), total + keep.size
    angles = np.concatenate(angles)
    assert kept / total > 0.5  # the comparison covers most of the image
    assert angles.mean() < 0.1
    assert np.percentile(angles, 99) < 1.0


def test_every_edge_pixel_has_a_4_neighbour_label_change_and_back():
    dataset = ToyScenes(20, SIZE, domain="target")
    for index in range(len(dataset)):
        sample = dataset[index]
        labels = sample["semseg"].numpy()
        padded = np.pad(labels, 1, mode="edge")
        change = np.zeros(SIZE, dtype=bool)
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            change |= padded[1 + dy:SIZE[0] + 1 + dy, 1 + dx:SIZE[1] + 1 + dx] != labels
        edges = sample["edges"][0].numpy().astype(bool)
        assert edges.any()
        assert np.array_equal(edges, change)


@pytest.mark.parametrize("domain", ["source", "target"])
def test_class_frequencies_lie_in_the_documented_bounds(domain):
    bounds = documented_class_bounds(domain)
    assert sorted(bounds) == list(TOY_CLASS_IDS)
    dataset = ToyScenes(200, SIZE, domain=domain, seed=3, split="val")
    counts = sum(np.bincount(dataset.geometry(i).labels.ravel(), minlength=19) for i in range(len(dataset)))
    fractions = counts / counts.sum()
    for class_id, (low, high) in bounds.items():
        assert low <= fractions[class_id] <= high, (CITYSCAPES_CLASSES[class_id], fractions[class_id])
    assert fractions[list(TOY_CLASS_IDS)].sum() == pytest.approx(1.0)


# --- the domain gap ---------------------------------------------------------------------------------

def test_the_domains_differ_in_the_documented_image_statistics():
    source = image_statistics(ToyScenes(24, SIZE, "source"), 24)
    plain = image_statistics(ToyScenes(24, SIZE, "target", severity=0.0), 24)
    shifted = image_statistics(ToyScenes(24, SIZE, "target", severity=0.5), 24)
    strong = image_statistics(ToyScenes(24, SIZE, "target", severity=1.0), 24)
    assert abs(plain["saturation"] - source["saturation"]) < 0.04  # severity 0 looks like the source
    assert abs(plain["energy"] - source["energy"]) < 0.2 * source["energy"]
    assert shifted["saturation"] < 0.75 * source["saturation"]
    assert shifted["energy"] > 1.3 * source["energy"]  # 1.7x at 64x128, 2.8x at 128x256
    assert source["haze"] < 0.25 and plain["haze"] < 0.25 and shifted["haze"] > 0.5
    assert strong["saturation"] < shifted["saturation"] and strong["energy"] > shifted["energy"]
