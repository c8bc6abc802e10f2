"""Preparation: checks, split lists, manifest, resumable cache (densemtl_lab/data/prepare.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from densemtl_lab.atomic import write_bytes_atomic
from densemtl_lab.data import prepare as prepare_module
from densemtl_lab.data.fixtures import WRITERS
from densemtl_lab.data.prepare import (
    DATASETS,
    PrepareConfig,
    PreparedDataset,
    PrepareError,
    main,
    prepare,
)

REPO = Path(__file__).resolve().parents[1]
CACHE_SIZE = (32, 64)


def temporary_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_cache_reads_back_as_the_loader_serves(tmp_path: Path, dataset: str) -> None:
    WRITERS[dataset](tmp_path / "raw")
    config = PrepareConfig(dataset, tmp_path / "raw", tmp_path / "out", size=CACHE_SIZE)
    manifest = prepare(config, progress=False)
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    for split in ("train", "val"):
        loader = DATASETS[dataset](tmp_path / "raw", split=split, size=CACHE_SIZE)
        names = [sample.name for sample in loader.samples]
        assert manifest["splits"][split]["count"] == len(loader)
        assert (tmp_path / "out" / "splits" / f"{split}.txt").read_text().split() == names
        cached = PreparedDataset(tmp_path / "out", split)
        assert cached.num_classes == loader.num_classes and cached.domain == loader.domain
        assert cached.palette == tuple(tuple(colour) for colour in loader.palette)
        for index in range(len(loader)):
            expected, got = loader[index], cached[index]
            assert got.keys() == expected.keys() and got["name"] == names[index]
            for key in ("semseg", "depth", "normals", "edges", "K"):
                assert torch.equal(got[key], expected[key]), key
            assert (got["image"] - expected["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert not temporary_files(tmp_path / "out")


def test_an_interrupted_run_resumes_without_redoing_finished_samples(tmp_path, monkeypatch) -> None:
    WRITERS["cityscapes"](tmp_path / "raw", counts={"train": 3, "val": 1})
    config = PrepareConfig("cityscapes", tmp_path / "raw", tmp_path / "out", size=CACHE_SIZE)
    written: list[str] = []

    def interrupt_after_one(path: Path, data: bytes) -> Path:
        if written:
            raise KeyboardInterrupt  # Ctrl-C while the second sample is written
        written.append(path.name)
        return write_bytes_atomic(path, data)

    monkeypatch.setattr(prepare_module, "write_bytes_atomic", interrupt_after_one)
    with pytest.raises(KeyboardInterrupt):
        prepare(config, progress=False)
    assert len(list((tmp_path / "out" / "cache").rglob("*.npz"))) == 1
    assert not (tmp_path / "out" / "manifest.json").exists()

    written.clear()
    monkeypatch.setattr(prepare_module, "write_bytes_atomic",
                        lambda path, data: (written.append(path.name), write_bytes_atomic(path, data)))
    manifest = prepare(config, progress=False)
    assert written == ["aachen_000001_000019.npz", "aachen_000002_000019.npz",
                       "frankfurt_000000_000019.npz"]
    assert manifest["splits"]["train"]["count"] == 3
    assert not temporary_files(tmp_path / "out")


def test_a_cache_made_with_other_settings_is_refused(tmp_path: Path) -> None:
    WRITERS["synthia"](tmp_path / "raw")
    prepare(PrepareConfig("synthia", tmp_path / "raw", tmp_path / "out", size=CACHE_SIZE), progress=False)
    with pytest.raises(PrepareError, match="settings.json records a cache made with"):
        prepare(PrepareConfig("synthia", tmp_path / "raw", tmp_path / "out", size=(16, 32)), progress=False)


def test_missing_archives_are_each_named(tmp_path: Path, capsys) -> None:
    (tmp_path / "raw").mkdir()
    assert main("cityscapes", [str(tmp_path / "raw"), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    for archive in ("leftImg8bit", "gtFine", "disparity", "camera"):
        assert f"extract {archive}_trainvaltest.zip (from https://www.cityscapes-dataset.com" in error
    assert error.startswith("error: ") and error.count("\n") == 1


def test_verify_counts_ignored_unknown_colours(tmp_path: Path) -> None:
    WRITERS["vkitti2"](tmp_path / "raw")
    path = tmp_path / "raw/Scene01/15-deg-left/frames/classSegmentation/Camera_0/classgt_00000.png"
    bgr = cv2.imread(str(path))
    bgr[0, :5] = (3, 2, 1)
    cv2.imwrite(str(path), bgr)
    argv = [str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--verify", "--quiet",
            "--splits", "all"]
    assert main("vkitti2", argv) == 2
    assert main("vkitti2", argv + ["--unknown-colours", "ignore"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["splits"]["all"]["counts"] == {"unknown_colour_pixels": 5}
    assert manifest["options"] == {"unknown_colours": "ignore"}


def test_hash_files_records_each_file(tmp_path: Path) -> None:
    WRITERS["nyuv2"](tmp_path / "raw")
    config = PrepareConfig("nyuv2", tmp_path / "raw", tmp_path / "out", hash_files=True)
    hashes = prepare(config, progress=False)["splits"]["val"]["files_sha256"]
    assert len(hashes) == 5  # image, segmentation, depth, normals, edge
    depth = tmp_path / "raw/depth/val_0000.npy"
    assert hashes["depth/val_0000.npy"] == hashlib.sha256(depth.read_bytes()).hexdigest()
    assert not (tmp_path / "out" / "cache").exists()


def test_listing_checksum_changes_with_the_files(tmp_path: Path) -> None:
    WRITERS["nyuv2"](tmp_path / "raw")
    config = PrepareConfig("nyuv2", tmp_path / "raw", tmp_path / "out")
    before = prepare(config, progress=False)["splits"]["train"]["listing_sha256"]
    np.save(tmp_path / "raw/depth/train_0000.npy", np.zeros((48, 65), np.float32))
    assert prepare(config, progress=False)["splits"]["train"]["listing_sha256"] != before


def test_the_script_is_a_thin_wrapper(tmp_path: Path) -> None:
    WRITERS["nyuv2"](tmp_path / "raw")
    result = subprocess.run(
        [sys.executable, str(REPO / "data_scripts/prepare_nyuv2.py"), str(tmp_path / "raw"),
         "--out", str(tmp_path / "out"), "--size", "24", "32", "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nyuv2: train 2, val 1" in result.stdout
    assert len(PreparedDataset(tmp_path / "out", "train", size=(12, 16))[0]["semseg"]) == 12


def test_a_missing_cache_is_explained(tmp_path: Path) -> None:
    with pytest.raises(prepare_module.DatasetError, match="manifest.json is missing; run data_scripts"):
        PreparedDataset(tmp_path, "train")


def test_splits_prepared_one_run_at_a_time_share_the_manifest(tmp_path: Path) -> None:
    WRITERS["synthia"](tmp_path / "raw")
    for split in ("train", "val"):
        config = PrepareConfig("synthia", tmp_path / "raw", tmp_path / "out", size=CACHE_SIZE,
                               splits=(split,))
        manifest = prepare(config, progress=False)
    assert {split: entry["count"] for split, entry in manifest["splits"].items()} == {"train": 2, "val": 1}
    assert len(PreparedDataset(tmp_path / "out", "train")) == 2


def test_an_unusable_output_folder_is_one_line_error(tmp_path: Path, capsys) -> None:
    WRITERS["nyuv2"](tmp_path / "raw")
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "out"
    assert main("nyuv2", [str(tmp_path / "raw"), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(tmp_path / "file") in error and error.count("\n") == 1


def test_sequence_checks_the_neighbouring_frames_and_refuses_a_cache(tmp_path: Path, capsys) -> None:
    WRITERS["cityscapes"](tmp_path / "raw", counts={"train": 1, "val": 1}, sequences=True)
    argv = [str(tmp_path / "raw"), "--out", str(tmp_path / "out"), "--quiet", "--sequence"]
    assert main("cityscapes", argv + ["--verify"]) == 0
    (tmp_path / "raw" / "leftImg8bit_sequence" / "val" / "frankfurt" / "frankfurt_000000_000018_leftImg8bit.png").unlink()
    assert main("cityscapes", argv) == 2
    assert "frankfurt_000000_000018_leftImg8bit.png is missing" in capsys.readouterr().err
    assert main("cityscapes", argv + ["--size", "32", "64"]) == 2
    assert "--sequence with --size" in capsys.readouterr().err
