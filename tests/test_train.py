"""The trainer: loop, learning-rate groups, schedule, run folder, checkpoints, resume, NaN and Ctrl-C."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from densemtl_lab.checkpoint import ModelMismatchError, load_checkpoint
from densemtl_lab.cli import main
from densemtl_lab.config import get_profile, override
from densemtl_lab.evaluation import autocast_dtype, to_device
from densemtl_lab.metrics import MissingBaselineError, delta_m, flatten_metrics, load_baselines, save_baseline
from densemtl_lab.models import build_model
from densemtl_lab.run_folder import default_run_dir
from densemtl_lab.train import (
    History, NonFiniteLossError, RunDirError, Trainer, align_optimizer_state, build_optimizer, load_trained_model,
    place_model, prepare_run_dir, train,
)

SLOW_CLI = Path(__file__).parent / "helpers" / "slow_cli.py"
SMOKE = get_profile("smoke", quiet=True, device="cpu")


@pytest.fixture(scope="module")
def smoke_run(module_folder):
    """One smoke training (4 steps, evaluation and checkpoint at step 2 and 4) shared by several tests."""
    run_dir = module_folder / "run"
    config = get_profile("smoke", quiet=True, device="cpu", eval_every=2, checkpoint_every=2, keep_last=2)
    return config, run_dir, train(config, run_dir)


def test_history_csv_has_one_row_per_step_with_evaluations_merged():
    history = History(steps=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}],
                      evals=[{"step": 2, "semseg/mIoU": 0.25}])
    assert history.csv_text() == "step,loss,semseg/mIoU\n1,2.0,\n2,1.5,0.25\n"
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history


def test_flatten_metrics_joins_task_and_metric():
    assert flatten_metrics({"depth": {"rmse": 2}, "delta_m": -1.5}) == {"depth/rmse": 2.0, "delta_m": -1.5}


@pytest.mark.parametrize("setting, dtype", [("off", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_dtype_on_the_cpu(setting, dtype):
    assert autocast_dtype(setting, torch.device("cpu")) == dtype


@pytest.mark.parametrize("amx, avx512_bf16, dtype", [(True, True, torch.bfloat16), (False, True, torch.bfloat16),
                                                     (False, False, None)])
def test_auto_amp_is_bf16_on_cpus_with_native_bf16_and_float32_elsewhere(monkeypatch, amx, avx512_bf16, dtype):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert autocast_dtype("auto", torch.device("cpu")) == dtype
    assert autocast_dtype("auto", torch.device("meta")) is None  # neither CUDA nor a CPU: float32
    assert autocast_dtype("off", torch.device("cpu")) is None



@pytest.mark.parametrize("name, kind, option, value", [
    ("adam", torch.optim.Adam, "betas", (0.9, 0.98)), ("sgd", torch.optim.SGD, "momentum", 0.9)])
def test_optimizer_has_two_learning_rate_groups(name, kind, option, value):
    optim = override(SMOKE, f"optim.name={name}", "optim.lr=0.01", "optim.backbone_lr=0.001").optim
    backbone, default = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    optimizer = build_optimizer(optim, {"backbone": [backbone], "default": [default]})
    assert isinstance(optimizer, kind)
    assert [(g["name"], g["lr"], g["params"]) for g in optimizer.param_groups] == [
        ("backbone", 0.001, [backbone]), ("default", 0.01, [default])]
    assert optimizer.param_groups[0][option] == value


def test_alpha_lr_gives_the_correlation_alphas_their_own_group():
    trainer = Trainer(override(SMOKE, "optim.alpha_lr=0.02"))
    groups = {group["name"]: group for group in trainer.optimizer.param_groups}
    alphas = [param for name, param in trainer.model.named_parameters() if name.endswith("correlation.alpha")]
    assert len(alphas) == 6 and groups["alpha"]["lr"] == 0.02
    assert {id(p) for p in groups["alpha"]["params"]} == {id(p) for p in alphas}
    assert not {id(p) for p in alphas} & {id(p) for p in groups["default"]["params"]}
    assert [g["name"] for g in Trainer(SMOKE).optimizer.param_groups] == ["backbone", "default"]  # off by default


def test_default_run_dir_names_profile_model_tasks_and_seed():
    assert default_run_dir(SMOKE, "runs") == Path("runs/smoke-densemtl-SDN-s0")


def test_run_dir_is_never_taken_over_silently(tmp_path):
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, SMOKE, resume=False, overwrite=False)
    (run_dir / "checkpoints" / "step_0000002.pt").write_bytes(b"x")
    with pytest.raises(RunDirError, match="already exists; pass --resume to continue it, --overwrite"):
        prepare_run_dir(run_dir, SMOKE, resume=False, overwrite=False)
    with pytest.raises(RunDirError, match="its config differs in model.tasks"):
        prepare_run_dir(run_dir, override(SMOKE, "model.tasks=SD"), resume=True, overwrite=False)
    prepare_run_dir(run_dir, override(SMOKE, "train.steps=8"), resume=True, overwrite=False)  # longer: fine
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 8
    prepare_run_dir(run_dir, SMOKE, resume=False, overwrite=True)
    assert not (run_dir / "checkpoints" / "step_0000002.pt").exists()
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="holds no config.json"):
        prepare_run_dir(foreign, SMOKE, resume=False, overwrite=True)
    assert (foreign / "notes.txt").exists()


def test_a_run_folder_holds_config_history_checkpoints_and_metrics(smoke_run):
    config, run_dir, result = smoke_run
    assert result.step == 4 and not result.interrupted
    assert json.loads((run_dir / "config.json").read_text()) == result_config(config).to_dict()
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["step"] for row in history["steps"]] == [1, 2, 3, 4]
    assert set(history["steps"][0]) == {"step", "loss", "lr/backbone", "lr/default", "loss/semseg",
                                        "loss/depth", "loss/normals"}
    assert [row["step"] for row in history["evals"]] == [2, 4]
    assert "semseg/mIoU" in history["evals"][0] and "weight/semseg" in history["evals"][0]
    csv_lines = (run_dir / "history.csv").read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[0].startswith("step,loss,")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["metrics"] == result.metrics
    assert set(result.metrics) == {"semseg", "depth", "normals"}
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best.json", "best.pt", "step_0000002.pt", "step_0000004.pt"]
    assert result.last_checkpoint.name == "step_0000004.pt" and result.best_checkpoint.name == "best.pt"


def result_config(config):
    """The config as the run folder stores it: num_classes resolved from the dataset (19 toy classes)."""
    return override(config, "model.num_classes=19")


def test_a_checkpoint_holds_every_state_a_resume_needs(smoke_run):
    _, run_dir, result = smoke_run
    state = load_checkpoint(run_dir / "checkpoints" / "step_0000004.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "criterion", "rng", "data", "history", "config",
            "tasks", "step", "classes"} <= set(state)
    assert state["tasks"] == ["semseg", "depth", "normals"] and state["step"] == 4
    assert state["data"] == {"epoch": 0, "batch": 4}  # 16 training scenes / batch 2 = 8 per pass
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    model, config, best = load_trained_model(result.best_checkpoint)
    assert not model.training and config.model.tasks == "SDN" and "optimizer" not in best
    best_step = json.loads((run_dir / "checkpoints" / "best.json").read_text())["step"]
    periodic = load_checkpoint(run_dir / "checkpoints" / f"step_{best_step:07d}.pt")["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(periodic[key], value), key


def test_resuming_a_finished_run_trains_no_more(smoke_run):
    config, run_dir, result = smoke_run
    again = Trainer(config, run_dir, resume=True)
    assert again.step == 4
    resumed = again.fit()
    assert resumed.metrics == result.metrics and len(resumed.history.steps) == 4


@pytest.mark.parametrize("amp", ["bf16", "off"])
def test_two_runs_with_the_same_seed_and_profile_give_the_same_weights_and_metrics(amp):
    config = override(SMOKE, f"train.amp={amp}", "train.seed=3")
    first, second = train(config), train(config)
    assert first.metrics == second.metrics
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resuming_with_a_checkpoint_that_does_not_fit_names_the_file(smoke_run, tmp_path):
    config, run_dir, _ = smoke_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    other = build_model("mtl", config.model.task_names, num_classes=8, backbone=config.model.backbone,
                        weights=None)
    with pytest.raises(ModelMismatchError, match=f"^checkpoint {copy / 'checkpoints' / 'step_0000004.pt'} "
                                                 "does not fit the model: unexpected keys"):
        Trainer(config, copy, resume=True, model=other)


def test_a_run_paused_with_until_and_resumed_matches_the_straight_run(smoke_run, tmp_path):
    config, straight_dir, _ = smoke_run
    run_dir = tmp_path / "paused"
    paused = Trainer(config, run_dir).fit(until=3)
    assert paused.step == 3 and not paused.interrupted and paused.last_checkpoint.name == "step_0000003.pt"
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 3  # not complete: notebooks resume it
    finished = Trainer(config, run_dir, resume=True).fit()
    assert finished.step == 4
    straight = load_checkpoint(straight_dir / "checkpoints" / "step_0000004.pt")
    resumed = load_checkpoint(run_dir / "checkpoints" / "step_0000004.pt")
    for key in ("model", "optimizer", "criterion", "data"):
        _assert_same(resumed[key], straight[key], key)
    assert resumed["history"]["steps"] == straight["history"]["steps"]
    assert [row["step"] for row in resumed["history"]["evals"]] == [2, 3, 4]  # one more at the pause


def _adam_step_after_reload(param_format: torch.memory_format, align: bool) -> torch.Tensor:
    """A 3x3 weight in `param_format` after two fused Adam steps, its moments reloaded in NCHW between them."""
    generator = torch.Generator().manual_seed(0)
    weight, grad = torch.randn(8, 4, 3, 3, generator=generator), torch.randn(8, 4, 3, 3, generator=generator)
    param = torch.nn.Parameter(weight.contiguous(memory_format=param_format))
    optimizer = torch.optim.Adam([param], lr=0.1, fused=True)
    for step in range(2):
        param.grad = grad.contiguous(memory_format=param_format)
        optimizer.step()
        if step == 0:
            saved = optimizer.state_dict()
            for key in ("exp_avg", "exp_avg_sq"):
                saved["state"][0][key] = saved["state"][0][key].contiguous()
            optimizer.load_state_dict(saved)
            if align:
                align_optimizer_state(optimizer)
    return param.detach().contiguous()


def test_reloaded_adam_moments_take_their_weights_layout_without_which_fused_adam_is_wrong():
    reference = _adam_step_after_reload(torch.contiguous_format, align=False)
    # torch's fused CPU Adam pairs the elements by memory order: a channels_last weight with NCHW moments
    # is updated wrongly, silently (if torch fixes this, align_optimizer_state is no longer needed)
    assert not torch.allclose(_adam_step_after_reload(torch.channels_last, align=False), reference)
    assert torch.equal(_adam_step_after_reload(torch.channels_last, align=True), reference)


def test_a_run_resumes_in_another_memory_format_with_its_moments_in_the_new_one(smoke_run, tmp_path):
    config, run_dir, _ = smoke_run
    copy = shutil.copytree(run_dir, tmp_path / "run")
    (copy / "checkpoints" / "step_0000004.pt").unlink()  # resume from step 2
    assert config.train.channels_last is False
    resumed = Trainer(override(config, "train.channels_last=true"), copy, resume=True)
    assert resumed.step == 2
    weights = [p for p in resumed.model.parameters() if p.dim() == 4 and p.shape[-1] == 3]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    for param in weights:
        state = resumed.optimizer.state[param]
        assert state["exp_avg"].stride() == state["exp_avg_sq"].stride() == param.stride()
    assert resumed.fit().step == 4
    assert json.loads((copy / "config.json").read_text())["train"]["channels_last"] is True


def _store_baselines(path, tasks: dict[str, tuple[str, float]]) -> None:
    for task, (metric, value) in tasks.items():
        save_baseline(path, "mine", task, {metric: value}, {"seeds": [0], "commit": "", "config": "test"})


def test_delta_m_against_a_baselines_file_picks_the_best_checkpoint(tmp_path):
    baselines_file = tmp_path / "baselines.json"
    _store_baselines(baselines_file, {"semseg": ("mIoU", 20.0), "depth": ("rmse", 8.0), "normals": ("mean_angle", 40.0)})
    config = get_profile("smoke", quiet=True, device="cpu", best_metric="delta_m", baseline_setting="mine",
                         baselines_file=str(baselines_file))
    result = train(config, tmp_path / "run")
    expected = delta_m(result.metrics, load_baselines(baselines_file, "mine"))
    assert result.history.evals[-1]["delta_m"] == pytest.approx(expected)
    best = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "delta_m"
    assert best["value"] == pytest.approx(max(row["delta_m"] for row in result.history.evals))


def test_delta_m_with_a_missing_baseline_stops_before_training(tmp_path):
    baselines_file = tmp_path / "baselines.json"
    _store_baselines(baselines_file, {"semseg": ("mIoU", 20.0)})
    config = get_profile("smoke", quiet=True, device="cpu", best_metric="delta_m", baseline_setting="mine",
                         baselines_file=str(baselines_file))
    with pytest.raises(MissingBaselineError, match=r"no single-task baseline for depth, normals in setting 'mine'"):
        Trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("until", [0, 5])
def test_until_outside_the_run_is_refused(until):
    with pytest.raises(ValueError, match=f"until={until} must lie between 1 and train.steps=4"):
        Trainer(SMOKE).fit(until=until)


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_applies_to_model_and_images(channels_last):
    trainer = Trainer(override(SMOKE, f"train.channels_last={channels_last}"))
    conv = next(module for module in trainer.model.modules() if isinstance(module, torch.nn.Conv2d))
    assert conv.kernel_size == (7, 7)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is channels_last
    batch = to_device(next(trainer._batches()), trainer.device, trainer.channels_last)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last) is channels_last
    assert batch["image"].is_contiguous() is not channels_last


def test_channels_last_decoders_puts_the_task_side_in_it_and_leaves_the_encoder_nchw():
    trainer = Trainer(override(SMOKE, "train.channels_last=decoders"))
    model = trainer.model

    def layouts(part):
        return {p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                for p in part.parameters() if p.dim() == 4 and p.shape[-1] > 1}
    assert layouts(model.encoder) == {False} and layouts(model.decoders) == layouts(model.exchange) == {True}
    batch = to_device(next(trainer._batches()), trainer.device, trainer.channels_last)
    assert batch["image"].is_contiguous()  # the encoder reads NCHW images
    handed_over = []
    model.encoder.register_forward_hook(lambda module, args, features: handed_over.append(features))
    nchw = place_model(build_model("densemtl", SMOKE.model.task_names, num_classes=19,
                                   **SMOKE.model.build_options()), trainer.device, False)
    nchw.load_state_dict(model.state_dict())
    with torch.no_grad():
        got, expected = model.eval()(batch["image"]), nchw.eval()(batch["image"])
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in handed_over[0])
    for task in got:
        assert torch.allclose(got[task][0], expected[task][0], atol=1e-4), task
    place_model(model, trainer.device, "decoders")  # placing again adds no second conversion
    assert len(model.encoder._forward_hooks) == 2  # the conversion and this test's hook
    assert all(math.isfinite(value) for value in trainer.train_step(batch))


def test_learning_rate_groups_schedule_and_clipping(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    clip_calls = []
    original_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, max_norm: clip_calls.append(max_norm) or original_clip(params, max_norm))
    config = override(SMOKE, "optim.backbone_lr=0", "optim.scheduler_step=2", "optim.scheduler_gamma=0.5",
                      "optim.clip_grad_norm=3")
    trainer = Trainer(config)  # no run folder: nothing is written
    encoder = {k: v.clone() for k, v in trainer.model.encoder.state_dict().items() if "running" not in k
               and "num_batches" not in k}
    heads = [p.detach().clone() for p in trainer.model.parameter_groups()["default"]]
    result = trainer.fit()
    assert [row["lr/default"] for row in result.history.steps] == [1e-3, 1e-3, 5e-4, 5e-4]
    assert all(row["lr/backbone"] == 0 for row in result.history.steps)
    after = trainer.model.encoder.state_dict()
    assert all(torch.equal(after[key], value) for key, value in encoder.items())  # backbone LR 0: frozen
    assert any(not torch.equal(p, q) for p, q in zip(heads, trainer.model.parameter_groups()["default"]))
    assert clip_calls == [3.0] * 4
    assert list(tmp_path.iterdir()) == [] and result.last_checkpoint is None


def test_a_nan_loss_stops_the_run_naming_task_and_step_and_keeps_the_good_checkpoint(tmp_path):
    config = override(SMOKE, "train.steps=6", "train.checkpoint_every=2", "train.eval_every=6")
    trainer = Trainer(config, tmp_path / "run")
    criterion_forward = trainer.criterion.forward
    calls = []

    def poisoned(outputs, batch):
        total, parts = criterion_forward(outputs, batch)
        calls.append(1)
        if len(calls) == 3:
            parts = {**parts, "depth": parts["depth"] * float("nan")}
            total = total + parts["depth"]
        return total, parts

    trainer.criterion.forward = poisoned
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert message.startswith("loss of task 'depth' is nan at step 3; the run stopped and the last good "
                              "checkpoint is ")
    assert message.split("checkpoint is ")[1].startswith(str(tmp_path / "run" / "checkpoints" / "step_0000002.pt"))
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")] == ["step_0000002.pt"]
    assert trainer.step == 2


def test_cpu_autocast_bf16_runs_the_network_in_bfloat16_and_its_heads_in_float32():
    trainer = Trainer(override(SMOKE, "train.amp=bf16", "train.steps=1", "train.eval_every=1"))
    features, outputs = [], []
    trainer.model.encoder.register_forward_hook(lambda module, args, out: features.append(out[-1].dtype))
    trainer.model.register_forward_hook(lambda module, args, out: outputs.append(out["depth"][0].dtype))
    result = trainer.fit()
    assert features[0] == torch.bfloat16 and outputs[0] == torch.float32 and trainer.scaler is None
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history.steps)
    assert result.metrics["semseg"]["pixel_acc"] >= 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: fp16 autocast with GradScaler, "
                    "channels_last and pinned memory are CUDA code paths")
def test_cuda_paths_fp16_scaler_channels_last_pinned_memory():
    trainer = Trainer(override(SMOKE, "train.device=cuda", "train.amp=fp16", "train.steps=2",
                               "train.channels_last=true"))
    assert trainer.scaler is not None and trainer.loader.pin_memory
    assert torch.backends.cudnn.benchmark
    result = trainer.fit()
    assert trainer.scaler.get_scale() > 0 and len(result.history.steps) == 2
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: automatic bf16/fp16 choice")
def test_cuda_auto_amp_prefers_bf16():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype("auto", torch.device("cuda")) == expected


# --- interrupted runs (subprocesses) -----------------------------------------------------------------

RESUME_ARGS = ["--profile", "smoke", "--quiet", "--device", "cpu", "-p", "train.steps=4",
               "-p", "train.checkpoint_every=2", "-p", "train.eval_every=3", "-p", "data.hflip=true"]


def _start_slow_run(run_dir: Path, marker: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, str(SLOW_CLI), "0.4", str(marker), "train", "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the training subprocess made no progress"
        time.sleep(0.05)


def _steps_done(marker: Path) -> int:
    try:
        return int(marker.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _assert_same(resumed, straight, where: str = "state") -> None:
    """Nested checkpoint contents are equal: tensors bitwise, everything else by value."""
    if torch.is_tensor(straight):
        assert torch.equal(resumed, straight), where
    elif isinstance(straight, dict):
        assert resumed.keys() == straight.keys(), where
        for key in straight:
            _assert_same(resumed[key], straight[key], f"{where}.{key}")
    elif isinstance(straight, (list, tuple)):
        assert len(resumed) == len(straight), where
        for index, (a, b) in enumerate(zip(resumed, straight)):
            _assert_same(a, b, f"{where}[{index}]")
    else:
        assert resumed == straight, where


def test_a_run_killed_mid_way_and_resumed_ends_with_the_same_weights(tmp_path):
    assert main(["train", "--run-dir", str(tmp_path / "straight"), *RESUME_ARGS]) == 0
    killed_dir, marker = tmp_path / "killed", tmp_path / "steps"
    process = _start_slow_run(killed_dir, marker, *RESUME_ARGS)
    checkpoint = killed_dir / "checkpoints" / "step_0000002.pt"
    _wait_for(lambda: checkpoint.exists() and _steps_done(marker) >= 3, process)
    process.send_signal(signal.SIGKILL)  # during step 3, after the step-2 checkpoint
    process.wait(timeout=30)
    assert not (killed_dir / "checkpoints" / "step_0000004.pt").exists()
    assert main(["train", "--run-dir", str(killed_dir), "--resume", *RESUME_ARGS]) == 0
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_0000004.pt")
    resumed = load_checkpoint(killed_dir / "checkpoints" / "step_0000004.pt")
    for key in ("model", "optimizer", "criterion", "history", "metrics", "data"):
        _assert_same(resumed[key], straight[key], key)


def test_ctrl_c_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "steps"
    process = _start_slow_run(run_dir, marker, "--profile", "smoke", "--quiet", "--device", "cpu",
                              "-p", "train.steps=50", "-p", "train.checkpoint_every=100")
    _wait_for(lambda: _steps_done(marker) >= 2, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    checkpoints = list((run_dir / "checkpoints").glob("step_*.pt"))
    assert len(checkpoints) == 1
    step = load_checkpoint(checkpoints[0])["step"]
    assert 2 <= step < 50 and f"Interrupted at step {step}" in stdout and "--resume" in stdout
    assert json.loads((run_dir / "metrics.json").read_text())["interrupted"] is True
    assert len(json.loads((run_dir / "history.json").read_text())["steps"]) == step
