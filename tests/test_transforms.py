"""Joint transforms: every map and K move together (densemtl_lab/data/transforms.py)."""

from __future__ import annotations

import pytest
import torch

from densemtl_lab.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    TransformError,
    crop,
    hflip,
)

H, W = 4, 6


def make_sample() -> dict[str, object]:
    """A 4 x 6 sample with distinct values everywhere and two invalid normals/depth pixels."""
    generator = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(3, H, W, generator=generator), dim=0)
    normals[:, 0, 0] = 0.0
    normals[:, 2, 3] = 0.0
    depth = torch.arange(1.0, H * W + 1).reshape(1, H, W)
    depth[0, 0, 0] = 0.0
    return {
        "image": torch.rand(3, H, W, generator=generator),
        "semseg": torch.arange(H * W, dtype=torch.int64).reshape(H, W) % 5,
        "depth": depth,
        "normals": normals,
        "edges": (torch.arange(H * W).reshape(1, H, W) % 3 == 0).float(),
        "K": torch.tensor([[10.0, 0.0, 2.5], [0.0, 12.0, 1.5], [0.0, 0.0, 1.0]]),
        "name": "sample", "domain": "test",
    }


def assert_samples_equal(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype, key
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def test_flip_twice_is_identity() -> None:
    sample = make_sample()
    assert_samples_equal(hflip(hflip(sample)), sample)


def test_flip_mirrors_every_map() -> None:
    sample = make_sample()
    flipped = hflip(sample)
    for key in ("image", "semseg", "depth", "edges"):
        assert torch.equal(flipped[key][..., 0], sample[key][..., W - 1]), key
    assert flipped["name"] == "sample"


def test_flip_negates_normals_x_only_where_valid() -> None:
    sample = make_sample()
    flipped = hflip(sample)["normals"]
    mirrored = sample["normals"].flip(-1)
    assert torch.equal(flipped[1:], mirrored[1:])
    assert torch.equal(flipped[0, 1, 2], -mirrored[0, 1, 2])
    # invalid pixels (0, 0) and (2, 3) land at columns 5 and 2; they stay +0, not -0
    for row, col in ((0, W - 1), (2, W - 1 - 3)):
        assert torch.equal(flipped[:, row, col], torch.zeros(3))
        assert not torch.signbit(flipped[0, row, col])


def test_flip_mirrors_principal_point() -> None:
    sample = make_sample()
    K = hflip(sample)["K"]
    assert K[0, 2].item() == pytest.approx(W - 2.5)
    assert torch.equal(K[1], sample["K"][1]) and K[0, 0] == sample["K"][0, 0]
    # A point projecting to u = 4.0 in the image projects to W - 4.0 once the scene is mirrored.
    x, z = 0.15, 1.0
    u = 10.0 * x / z + 2.5
    assert 10.0 * (-x) / z + K[0, 2].item() == pytest.approx(W - u)


def test_crop_cuts_maps_and_shifts_principal_point() -> None:
    sample = make_sample()
    cropped = crop(sample, top=1, left=2, size=(2, 3))
    assert torch.equal(cropped["semseg"], sample["semseg"][1:3, 2:5])
    assert torch.equal(cropped["normals"], sample["normals"][:, 1:3, 2:5])
    assert cropped["K"][0, 2].item() == pytest.approx(0.5)
    assert cropped["K"][1, 2].item() == pytest.approx(0.5)


@pytest.mark.parametrize("size", [(2, 3), (4, 6), (1, 1)])
def test_random_crop_has_size_and_is_seeded(size: tuple[int, int]) -> None:
    sample = make_sample()
    first = [RandomCrop(size, seed=7)(sample) for _ in range(2)]
    assert_samples_equal(first[0], first[1])
    assert first[0]["semseg"].shape == size
    top = int(sample["K"][1, 2] - first[0]["K"][1, 2])
    left = int(sample["K"][0, 2] - first[0]["K"][0, 2])
    assert torch.equal(first[0]["depth"], sample["depth"][..., top:top + size[0], left:left + size[1]])


def test_random_crop_draws_different_windows() -> None:
    transform = RandomCrop((1, 1), seed=0)
    windows = {tuple(transform(make_sample())["K"][:2, 2].tolist()) for _ in range(30)}
    assert len(windows) > 5


def test_resize_scales_intrinsics_and_keeps_labels_nearest() -> None:
    sample = make_sample()
    resized = Resize((8, 9))(sample)
    assert resized["K"][0, 0].item() == pytest.approx(10.0 * 9 / 6)
    assert resized["K"][0, 2].item() == pytest.approx(2.5 * 9 / 6)
    assert resized["K"][1, 1].item() == pytest.approx(12.0 * 2)
    assert resized["K"][1, 2].item() == pytest.approx(3.0)
    assert resized["semseg"].dtype == torch.int64 and resized["semseg"].shape == (8, 9)
    assert set(resized["semseg"].unique().tolist()) <= set(sample["semseg"].unique().tolist())
    assert set(resized["edges"].unique().tolist()) <= {0.0, 1.0}
    assert set(resized["depth"].unique().tolist()) <= set(sample["depth"].unique().tolist())
    assert torch.equal(resized["semseg"][::2, ::3][:4, :3], sample["semseg"][:, ::2])


def test_resize_antialiases_the_image() -> None:
    sample = make_sample()
    sample["image"] = torch.zeros(3, H, W)
    sample["image"][:, :, 1::3] = 1.0  # one bright column in three
    image = Resize((2, 2))(sample)["image"]
    assert image.shape == (3, 2, 2)
    # Plain bilinear samples exactly the bright columns (1.0); the antialiased filter averages them.
    assert torch.allclose(image, torch.full_like(image, 0.375), atol=1e-4)


def test_resize_to_the_same_size_changes_nothing() -> None:
    sample = make_sample()
    assert_samples_equal(Resize((H, W))(sample), sample)


@pytest.mark.parametrize("p, expected", [(0.0, 0), (1.0, 20)])
def test_flip_probability_extremes(p: float, expected: int) -> None:
    transform = RandomHorizontalFlip(p, seed=1)
    sample = make_sample()
    flips = sum(not torch.equal(transform(sample)["semseg"], sample["semseg"]) for _ in range(20))
    assert flips == expected


def test_random_flip_is_reproducible_with_a_seed_or_generator() -> None:
    sample = make_sample()

    def pattern(transform: RandomHorizontalFlip) -> list[bool]:
        return [transform(sample)["K"][0, 2].item() != 2.5 for _ in range(40)]

    seeded = pattern(RandomHorizontalFlip(seed=5))
    assert seeded == pattern(RandomHorizontalFlip(seed=5))
    assert seeded == pattern(RandomHorizontalFlip(generator=torch.Generator().manual_seed(5)))
    assert 5 < sum(seeded) < 35


def test_compose_applies_in_order() -> None:
    sample = make_sample()
    out = Compose((Resize((8, 12)), lambda s: crop(s, 0, 6, (8, 6))))(sample)
    assert out["semseg"].shape == (8, 6)
    assert out["K"][0, 2].item() == pytest.approx(2.5 * 2 - 6)


@pytest.mark.parametrize("make", [
    lambda: RandomCrop((5, 6), seed=0)(make_sample()),
    lambda: RandomHorizontalFlip(1.5),
    lambda: RandomHorizontalFlip(seed=0, generator=torch.Generator()),
    lambda: Resize((0, 4)),
])
def test_bad_parameters_raise(make) -> None:
    with pytest.raises(TransformError):
        make()


def test_maps_of_different_sizes_are_refused() -> None:
    sample = make_sample()
    sample["depth"] = torch.ones(1, H, W + 1)
    with pytest.raises(TransformError, match="share one size"):
        Resize((2, 3))(sample)
