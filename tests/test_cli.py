"""The `densemtl-lab` command: train, eval, predict, run, profiles, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from densemtl_lab.cli import COMMANDS, main
from densemtl_lab.config import PROFILES

SMOKE_ARGS = ["--profile", "smoke", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(module_folder):
    """A one-step smoke run made through the command line."""
    run_dir = module_folder / "run"
    assert main(["train", "--run-dir", str(run_dir), *SMOKE_ARGS, "--steps", "1", "--tasks", "SDNE"]) == 0
    return run_dir


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("densemtl-lab: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_every_command_is_registered():
    assert {"train", "eval", "diagnose", "predict", "study", "run", "profiles"} <= set(COMMANDS)


@pytest.mark.parametrize("args, message", [
    (["train", "--profile", "quik"], "unknown profile 'quik'; valid profiles: smoke, quick"),
    (["train", *SMOKE_ARGS, "--model", "resnet"], "model.name='resnet' is unknown; use one of stl"),
    (["train", *SMOKE_ARGS, "--tasks", "SQ"], "unknown task 'Q'"),
    (["train", *SMOKE_ARGS, "-p", "train.stpes=3"], "unknown config key 'train.stpes'; did you mean 'steps'"),
    (["train", "--profile", "paper-cityscapes"], "data.root is not set for dataset 'cityscapes'; pass -p "
                                                 "data.root=/path/to/cityscapes"),
    (["train", *SMOKE_ARGS, "-p", "data.dataset=nyuv2", "--data-root", "/no/such/dir"],
     "data.root='/no/such/dir' is not a folder for dataset 'nyuv2'"),
])
def test_user_errors_print_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()  # nothing is created before the config is usable


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_corrupt_checkpoints_give_one_line(trained, tmp_path, capsys, damage, command):
    source = (trained / "checkpoints" / "step_0000001.pt").read_bytes()
    path = tmp_path / "broken.pt"
    path.write_bytes(source[: len(source) // 3] if damage == "truncated" else b"\x00garbage" * 100)
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 32)).save(image)
    assert main([command, str(path), *([str(image)] if command == "predict" else [])]) == 2
    assert f"checkpoint {path} is corrupt or truncated" in _one_line_error(capsys)


def test_an_existing_run_folder_is_not_overwritten(trained, capsys):
    assert main(["train", "--run-dir", str(trained), *SMOKE_ARGS, "--steps", "1", "--tasks", "SDNE"]) == 2
    assert "already exists; pass --resume" in _one_line_error(capsys)


def test_a_nan_loss_exits_1_with_task_and_step(tmp_path, capsys):
    args = ["train", "--run-dir", str(tmp_path / "run"), *SMOKE_ARGS, "--steps", "3",
            "-p", "optim.lr=1e30", "-p", "optim.backbone_lr=1e30", "-p", "train.checkpoint_every=1"]
    assert main(args) == 1
    assert re.search(r"loss of task '(semseg|depth|normals)' is (nan|inf|-inf) at step 2; the run stopped "
                     r"and the last good checkpoint is", _one_line_error(capsys))


def test_eval_prints_and_writes_metrics(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["eval", str(trained / "checkpoints" / "best.pt"), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert set(written["metrics"]) == {"semseg", "depth", "normals", "edges"} and written["images"] == 4
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.rindex("}") + 1]) == written["metrics"]
    assert main(["eval", str(trained / "checkpoints" / "best.pt")]) == 0
    assert (trained / "checkpoints" / "best.metrics.json").is_file()


def test_eval_with_reference_quirks_computes_the_reference_metrics(trained, tmp_path):
    checkpoint = str(trained / "checkpoints" / "best.pt")
    ours, quirks = tmp_path / "ours.json", tmp_path / "quirks.json"
    assert main(["eval", checkpoint, "--out", str(ours)]) == 0
    assert main(["eval", checkpoint, "--out", str(quirks), "--reference-quirks"]) == 0
    ours, quirks = json.loads(ours.read_text()), json.loads(quirks.read_text())
    assert (ours["reference_quirks"], quirks["reference_quirks"]) == (False, True)
    assert quirks["metrics"]["semseg"] == ours["metrics"]["semseg"]  # semseg has no quirk
    for task in ("depth", "normals", "edges"):  # each of these has one (docs/faithfulness.md)
        assert quirks["metrics"][task] != ours["metrics"][task], task


def test_eval_refuses_to_change_the_trained_model(trained, capsys):
    assert main(["eval", str(trained / "checkpoints" / "best.pt"), "-p", "model.tasks=S"]) == 2
    assert "only data.* and train.* can change" in _one_line_error(capsys)


def test_predict_writes_a_picture_per_task_beside_inputs_or_into_a_folder(trained, tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for name, size in (("a.png", (70, 50)), ("b.jpg", (128, 64))):
        path = tmp_path / name
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        images.append(path)
    checkpoint = str(trained / "checkpoints" / "best.pt")
    assert main(["predict", checkpoint, *map(str, images), "--out", str(tmp_path / "out")]) == 0
    for image in images:
        width, height = Image.open(image).size
        for task in ("semseg", "depth", "normals", "edges"):
            picture = Image.open(tmp_path / "out" / f"{image.stem}_{task}.png")
            assert picture.mode == "RGB" and picture.size == (width, height)
    assert main(["predict", checkpoint, str(images[0])]) == 0
    assert (tmp_path / "a_depth.png").is_file()


def test_predict_names_a_missing_image_and_a_folder(trained, tmp_path, capsys):
    assert main(["predict", str(trained / "checkpoints" / "best.pt"), str(tmp_path / "none.png")]) == 2
    assert f"image {tmp_path / 'none.png'} does not exist" in _one_line_error(capsys)
    assert main(["predict", str(trained / "checkpoints" / "best.pt"), str(tmp_path)]) == 2
    assert f"image {tmp_path} is a folder; pass its image files (e.g. {tmp_path}/*.png)" in _one_line_error(capsys)


def _random_picture(path, seed: int):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_refuses_inputs_whose_outputs_collide_and_writes_nothing(trained, tmp_path, capsys):
    first = _random_picture((tmp_path / "a").mkdir() or tmp_path / "a" / "x.png", 0)
    second = _random_picture((tmp_path / "b").mkdir() or tmp_path / "b" / "x.png", 1)
    out = tmp_path / "same"
    assert main(["predict", str(trained / "checkpoints" / "best.pt"), str(first), str(second),
                 "--out", str(out)]) == 2
    assert f"images {first} and {second} would both write {out / 'x_semseg.png'}" in _one_line_error(capsys)
    assert not out.exists() or not any(out.iterdir())
    assert main(["predict", str(trained / "checkpoints" / "best.pt"), str(first), str(second)]) == 0  # beside each


def test_predict_never_overwrites_silently(trained, tmp_path, capsys):
    image = _random_picture(tmp_path / "x.png", 0)
    checkpoint = str(trained / "checkpoints" / "best.pt")
    assert main(["predict", checkpoint, str(image)]) == 0
    written = {path: path.read_bytes() for path in tmp_path.glob("x_*.png")}
    assert len(written) == 4
    (tmp_path / "x_depth.png").write_bytes(b"mine")
    _random_picture(image, 1)
    assert main(["predict", checkpoint, str(image)]) == 2
    assert "already exists; pass --overwrite" in _one_line_error(capsys)
    assert (tmp_path / "x_depth.png").read_bytes() == b"mine"
    assert main(["predict", checkpoint, str(image), "--overwrite"]) == 0
    assert Image.open(tmp_path / "x_depth.png").size == (64, 32)  # a picture again, not b"mine"
    assert not list(tmp_path.glob(".*.tmp"))  # written through the atomic writer


def test_resuming_a_run_with_fewer_steps_says_it_was_already_complete(trained, tmp_path, capsys):
    run_dir = shutil.copytree(trained, tmp_path / "run")  # a finished 1-step run
    args = ["train", "--run-dir", str(run_dir), *SMOKE_ARGS, "--tasks", "SDNE", "--resume"]
    capsys.readouterr()
    assert main([*args, "--steps", "1"]) == 0
    assert f"Nothing trained: {run_dir} was already complete at step 1." in capsys.readouterr().out
    assert main([*args, "--steps", "3"]) == 0
    assert f"Trained 3 steps into {run_dir} (resumed at step 1)." in capsys.readouterr().out
    assert main([*args, "--steps", "2"]) == 0
    assert (f"Nothing trained: {run_dir} was already complete at step 3, beyond the 2 steps asked for "
            "(train.steps=2)") in capsys.readouterr().out


def test_run_is_wired_to_the_batch_runner(tmp_path, capsys):
    (tmp_path / "notebooks").mkdir()
    assert main(["run", "--notebooks", str(tmp_path / "notebooks"), "--runs", str(tmp_path / "runs")]) == 2
    assert "holds no numbered notebooks (NN_name.ipynb)" in _one_line_error(capsys)
    assert not (tmp_path / "runs").exists()
    assert main(["run", "--profile", "nope", "--notebooks", str(tmp_path / "notebooks")]) == 2
    assert "unknown profile 'nope'" in _one_line_error(capsys)


def test_profiles_lists_every_profile_and_prints_one(capsys):
    assert main(["profiles"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(PROFILES)
    assert main(["profiles", "smoke"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["steps"] == 4


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run([sys.executable, "-m", "densemtl_lab", "profiles"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.splitlines()[0].startswith("smoke")


def test_help_and_profiles_start_without_torch():
    code = ("import sys; from densemtl_lab.cli import main; main(['profiles']); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "paper-synthia2cityscapes" in done.stdout
