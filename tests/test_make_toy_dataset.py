"""data_scripts/make_toy_dataset.py: the command line over toy_store.write_toy_dataset."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densemtl_lab.data import ToyScenes

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "make_toy_dataset.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_toy_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_runs_and_refuses_to_write_twice(tmp_path):
    out = tmp_path / "toy"
    command = [sys.executable, str(SCRIPT), str(out), "--length", "5", "--size", "32", "64",
               "--domain", "target", "--severity", "0.3", "--shard-size", "2", "--workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote 3 shards (5 images)" in done.stdout
    loaded = ToyScenes.from_disk(out)
    expected = ToyScenes(5, (32, 64), domain="target", severity=0.3)
    assert torch.equal(loaded[4]["normals"], expected[4]["normals"])

    again = load_script().main([str(out), "--length", "5", "--size", "32", "64", "--domain", "target",
                                "--severity", "0.3", "--shard-size", "2", "--quiet"])
    assert again == 2


@pytest.mark.parametrize(
    ("arguments", "parameter"),
    [
        (["--size", "30", "64"], "size="),
        (["--length", "0"], "length="),
        (["--severity", "2"], "severity="),
        (["--workers", "0"], "workers="),
    ],
)
def test_bad_arguments_print_one_line_naming_the_parameter(tmp_path, capsys, arguments, parameter):
    argv = [str(tmp_path / "toy"), "--length", "2", "--size", "32", "64", "--quiet", *arguments]
    assert load_script().main(argv) == 2  # argparse keeps the last value of a repeated option
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and parameter in error and "\n" not in error


def test_overwrite_replaces_an_existing_dataset(tmp_path, capsys):
    script = load_script()
    argv = [str(tmp_path), "--length", "2", "--size", "32", "64", "--quiet", "--workers", "1"]
    assert script.main(argv) == 0
    assert script.main([*argv, "--seed", "4"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert script.main([*argv, "--seed", "4", "--overwrite"]) == 0
    assert ToyScenes.from_disk(tmp_path).config.seed == 4
