"""The on-disk toy format: byte-identical round trip, atomic shards, resume, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from densemtl_lab.data import ToyScenes
from densemtl_lab.data.toy_store import MANIFEST, ToyStore, ToyStoreError, shard_name, write_toy_dataset

SIZE = (32, 64)


class Interrupted(Exception):
    """Raised by the test hook to stop a run after some shards."""


def stop_after(count: int):
    seen = []

    def hook(shard: int) -> None:
        seen.append(shard)
        if len(seen) == count:
            raise Interrupted

    return hook


def leftovers(root) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.name.endswith(".tmp"))


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trip_is_byte_identical_to_rendering(tmp_path, workers):
    dataset = ToyScenes(7, SIZE, domain="target", severity=0.4, seed=5, split="val")
    report = write_toy_dataset(tmp_path / "toy", dataset, shard_size=3, workers=workers, progress=False)
    assert report.written == (0, 1, 2) and report.skipped == () and report.images_written == 7
    assert sorted(path.name for path in (tmp_path / "toy").iterdir()) == [
        MANIFEST, shard_name(0), shard_name(1), shard_name(2)]
    manifest = json.loads((tmp_path / "toy" / MANIFEST).read_text())
    assert manifest["complete"] and manifest["num_shards"] == 3 and manifest["shard_size"] == 3
    assert manifest["config"] == {"length": 7, "size": [32, 64], "domain": "target", "severity": 0.4,
                                  "seed": 5, "split": "val"}
    loaded = ToyScenes.from_disk(tmp_path / "toy")
    assert loaded.config == dataset.config and len(loaded) == 7
    for index in range(7):
        rendered, stored = dataset[index], loaded[index]
        assert rendered.keys() == stored.keys()
        for key, value in rendered.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == stored[key].dtype
                assert value.numpy().tobytes() == stored[key].numpy().tobytes(), key
            else:
                assert value == stored[key]


def test_shards_store_exact_float32_depth_and_normals(tmp_path):
    dataset = ToyScenes(2, SIZE, seed=1)
    write_toy_dataset(tmp_path, dataset, shard_size=2, workers=1, progress=False)
    with np.load(tmp_path / shard_name(0)) as archive:
        assert archive["000001/depth"].dtype == np.float32 and archive["000001/normals"].dtype == np.float32
        assert archive["000001/image"].dtype == np.uint8 and archive["000001/image"].shape == (3, *SIZE)
        assert np.array_equal(archive["000001/depth"], dataset.arrays(1)["depth"])


def test_an_interrupted_run_resumes_with_only_the_missing_shards(tmp_path):
    root = tmp_path / "toy"
    dataset = ToyScenes(9, SIZE, seed=2)
    with pytest.raises(Interrupted):
        write_toy_dataset(root, dataset, shard_size=3, workers=1, progress=False, on_shard_written=stop_after(1))
    assert (root / shard_name(0)).is_file() and not (root / shard_name(1)).exists()
    assert leftovers(root) == []
    assert not json.loads((root / MANIFEST).read_text())["complete"]
    with pytest.raises(ToyStoreError, match="unfinished"):
        ToyScenes.from_disk(root)
    first_shard = (root / shard_name(0)).stat().st_mtime_ns
    (root / ".shard-00001.npz.tmp").write_bytes(b"half a shard")  # as a killed run leaves it

    report = write_toy_dataset(root, dataset, shard_size=3, workers=1, progress=False)
    assert report.skipped == (0,) and report.written == (1, 2) and report.images_written == 6
    assert (root / shard_name(0)).stat().st_mtime_ns == first_shard
    assert leftovers(root) == []
    loaded = ToyScenes.from_disk(root)
    assert torch.equal(loaded[8]["image"], dataset[8]["image"])


def test_an_interrupted_parallel_run_leaves_no_temp_files(tmp_path):
    dataset = ToyScenes(8, SIZE, seed=3)
    with pytest.raises(Interrupted):
        write_toy_dataset(tmp_path, dataset, shard_size=1, workers=2, progress=False, on_shard_written=stop_after(2))
    assert leftovers(tmp_path) == []
    finished = sorted(path.name for path in tmp_path.glob("shard-*.npz"))
    assert 2 <= len(finished) < 8
    report = write_toy_dataset(tmp_path, dataset, shard_size=1, workers=2, progress=False)
    assert len(report.skipped) == len(finished) and len(report.written) == 8 - len(finished)


def test_a_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    dataset = ToyScenes(2, SIZE)
    with pytest.raises(ToyStoreError, match="not empty; use --overwrite") as error:
        write_toy_dataset(tmp_path, dataset, shard_size=2, workers=1, progress=False)
    assert "\n" not in str(error.value)
    write_toy_dataset(tmp_path, dataset, shard_size=2, workers=1, progress=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"  # other files are left alone
    assert len(ToyScenes.from_disk(tmp_path)) == 2


def test_a_finished_or_different_dataset_is_refused_unless_overwrite(tmp_path):
    write_toy_dataset(tmp_path, ToyScenes(2, SIZE), shard_size=2, workers=1, progress=False)
    with pytest.raises(ToyStoreError, match="already holds this complete toy dataset"):
        write_toy_dataset(tmp_path, ToyScenes(2, SIZE), shard_size=2, workers=1, progress=False)
    with pytest.raises(ToyStoreError, match="not empty"):
        write_toy_dataset(tmp_path, ToyScenes(3, SIZE, seed=1), shard_size=2, workers=1, progress=False)
    report = write_toy_dataset(tmp_path, ToyScenes(3, SIZE, seed=1), shard_size=2, workers=1, progress=False,
                               overwrite=True)
    assert report.written == (0, 1)
    assert ToyScenes.from_disk(tmp_path).config.seed == 1


@pytest.mark.parametrize("make_path", [
    lambda tmp: tmp / "file.txt" / "toy",  # the parent is a file
    lambda tmp: tmp / "file.txt",  # the folder is a file
])
def test_an_unwritable_folder_gives_a_one_line_error(tmp_path, make_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ToyStoreError) as error:
        write_toy_dataset(make_path(tmp_path), ToyScenes(1, SIZE), workers=1, progress=False)
    message = str(error.value)
    assert "file.txt" in message and "\n" not in message
    assert "cannot write" in message or "is a file" in message


@pytest.mark.parametrize(("shard_size", "workers", "parameter"), [(0, 1, "shard_size="), (2, 0, "workers=")])
def test_bad_writer_arguments(tmp_path, shard_size, workers, parameter):
    with pytest.raises(ToyStoreError, match=parameter):
        write_toy_dataset(tmp_path, ToyScenes(1, SIZE), shard_size=shard_size, workers=workers, progress=False)


def test_reading_a_folder_without_a_dataset_or_with_a_missing_shard(tmp_path):
    with pytest.raises(ToyStoreError, match="no toy dataset"):
        ToyStore(tmp_path)
    write_toy_dataset(tmp_path, ToyScenes(4, SIZE), shard_size=2, workers=1, progress=False)
    (tmp_path / shard_name(1)).unlink()
    store = ToyStore(tmp_path)
    assert len(store) == 4 and store.arrays(1)["semseg"].shape == SIZE
    with pytest.raises(ToyStoreError, match="shard-00001.npz is missing"):
        store.arrays(2)
