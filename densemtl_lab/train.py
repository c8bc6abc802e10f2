"""The trainer: the reference's iteration-based multi-task loop (the official `training/base.py`), on any device.

One `Trainer` owns a model, its `MultiTaskLoss`, an optimiser with two learning-rate groups (backbone
versus decoders, exchange modules and loss-weighting parameters), a StepLR stepped every iteration,
gradient clipping, periodic evaluation with `MultiTaskMetrics`, checkpoints, and a history of losses
per step and metrics per evaluation. A run folder holds everything one run writes:

    <run_dir>/config.json           the resolved ExperimentConfig
              history.json / .csv   losses per step, metrics per evaluation
              checkpoints/          step_XXXXXXX.pt (last N, resumable), best.pt (+ best.json)
              metrics.json          the final evaluation and the best checkpoint's record

On CUDA it uses autocast (bf16 where supported, else fp16 with a gradient scaler), channels_last,
cuDNN benchmark, pinned memory and non-blocking copies; on the CPU channels_last, a tuned allocator
and no DataLoader workers by default. Each step synchronises with the host once, to read the losses
(history, progress bar and the NaN/inf check). Ctrl-C stops after the current step with a checkpoint.

Domain adaptation (`adapt.method`, docs/faithfulness.md, "Multi-task UDA") runs inside this loop: "oracle"
trains on the labelled target domain; the unsupervised methods plug in through one hook, `AdaptationHook`:
its `backward` adds the target-domain losses after the supervised backward and its `step` updates its
own parameters (the discriminators) with the generator's step. `densemtl_lab.uda` implements
"adversarial" and "entropy" and registers them here when imported (`register_adaptation`); this module
never imports it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import shutil
import signal
import threading
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from densemtl_lab import distributed
from densemtl_lab.atomic import write_json_atomic, write_text_atomic
from densemtl_lab.checkpoint import (
    FORMAT_VERSION, CheckpointManager, capture_rng, load_checkpoint, load_model_state, restore_rng,
)
from densemtl_lab.config import (
    ADAPT_METHODS, RESUMABLE_CHANGES, ConfigError, ExperimentConfig, OptimConfig, config_differences,
)
from densemtl_lab.conflicts import ConflictLog
from densemtl_lab.data.build import build_dataset
from densemtl_lab.evaluation import Batch, autocast_dtype, channels_last_on, evaluate, to_device
from densemtl_lab.losses import MultiTaskLoss, task_losses
from densemtl_lab.metrics import (
    BASELINES_FILE, Baselines, MissingBaselineError, delta_m, flatten_metrics, load_baselines,
)
from densemtl_lab.models import build_model
from densemtl_lab.runtime import release_free_heap, tune_cpu_allocator

#: A model's raw outputs: {task: {output scale: raw head output [B, C, h, w]}}.
Outputs = Mapping[str, Mapping[int, torch.Tensor]]


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite loss; the run stopped and kept its last good checkpoint."""


class RunDirError(ValueError):
    """A run folder that this run may not use (another run's, or not a run folder at all)."""


# --- history ------------------------------------------------------------------------------------------

@dataclass
class History:
    """Losses per step and metrics per evaluation, as flat rows ("loss/semseg", "semseg/mIoU")."""

    steps: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"steps": self.steps, "evals": self.evals}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> History:
        return cls([dict(row) for row in values["steps"]], [dict(row) for row in values["evals"]])

    def csv_text(self) -> str:
        """One row per step; evaluation columns are filled at the steps that evaluated."""
        evals = {row["step"]: row for row in self.evals}
        rows = [{**row, **evals.get(row["step"], {})} for row in self.steps]
        columns = list(dict.fromkeys(key for row in [*self.steps, *self.evals] for key in row))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return text.getvalue()

    def write(self, folder: Path) -> None:
        """history.json and history.csv, atomically."""
        write_json_atomic(folder / "history.json", self.to_dict())
        write_text_atomic(folder / "history.csv", self.csv_text())


@dataclass
class TrainResult:
    """What `Trainer.fit` hands back."""

    model: nn.Module
    history: History
    metrics: dict[str, dict[str, float]]
    step: int
    run_dir: Path | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    interrupted: bool = False
    start_step: int = 0  # where this fit() began: a resumed run's step, else 0


# --- devices, precision, optimiser ------------------------------------------------------------------

def configure_backend(device: torch.device, num_threads: int | None,
                      context: distributed.ProcessContext = distributed.ProcessContext()) -> None:
    """Per-process tuning: cuDNN autotuning on CUDA; allocator and thread count on the CPU.

    Without `num_threads`, one process keeps torch's default and the processes of a run share the cores.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif device.type == "cpu":
        tune_cpu_allocator()
        if num_threads is None and context.enabled:
            num_threads = max(1, (os.cpu_count() or 1) // context.local_world_size)
        if num_threads is not None:
            torch.set_num_threads(num_threads)


def _features_in_channels_last(encoder: nn.Module, inputs: Any, features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Forward hook: the encoder's features, handed to the task side in channels_last."""
    return [feature.contiguous(memory_format=torch.channels_last) for feature in features]


def place_model(model: nn.Module, device: torch.device, channels_last: bool | str) -> nn.Module:
    """Move `model` to `device`: all of it in channels_last (True), its task side only ("decoders": every
    part but `model.encoder`, which stays NCHW and hands its features over in channels_last) or none of it
    (False). On the CPU, return the freed copies' memory."""
    if channels_last == "decoders":
        model.to(device)
        for name, part in model.named_children():
            if name != "encoder":
                part.to(memory_format=torch.channels_last)
        if _features_in_channels_last not in model.encoder._forward_hooks.values():
            model.encoder.register_forward_hook(_features_in_channels_last)
    else:
        model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if device.type == "cpu":
        release_free_heap()
    return model


def align_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Give every loaded per-parameter state tensor (Adam's moments) its parameter's memory layout.

    A checkpoint keeps the layout of the run that wrote it, and `optimizer.load_state_dict` keeps it too;
    a run resumed in another `train.channels_last` would pair channels_last weights with NCHW moments
    (or the reverse), and torch's fused Adam on the CPU then updates the wrong elements without a word
    (torch 2.14; tests/test_train.py shows it).
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def build_optimizer(optim: OptimConfig, groups: Mapping[str, list[nn.Parameter]]) -> torch.optim.Optimizer:
    """Adam (the reference's) or SGD with momentum over the "backbone" and "default" groups, an
    "alpha" group at `optim.alpha_lr` when `groups` has one (see `alpha_group`), and a "pose" group (the
    pose network of a photometric depth loss) at `optim.pose_lr`.

    Adam runs its fused kernel on CPUs and GPUs: one pass over all parameters instead of a dozen
    element-wise ops per tensor (6x less time per update on a 2-core CPU here).
    """
    param_groups = [{"params": groups["backbone"], "lr": optim.backbone_lr, "name": "backbone"},
                    {"params": groups["default"], "lr": optim.lr, "name": "default"}]
    if groups.get("alpha"):
        param_groups.append({"params": groups["alpha"], "lr": optim.alpha_lr or optim.lr, "name": "alpha"})
    if groups.get("pose"):
        param_groups.append({"params": groups["pose"], "lr": optim.pose_lr, "name": "pose"})
    if optim.name == "adam":
        fused = all(p.device.type in ("cpu", "cuda") for group in groups.values() for p in group)
        return torch.optim.Adam(param_groups, betas=optim.betas, weight_decay=optim.weight_decay,
                                fused=fused)
    return torch.optim.SGD(param_groups, lr=optim.lr, momentum=optim.momentum,
                           weight_decay=optim.weight_decay)


def alpha_group(groups: Mapping[str, list[nn.Parameter]], model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """`groups` with the correlation branches' alpha moved from "default" into their own "alpha" group."""
    alphas = [param for name, param in model.named_parameters() if name.endswith("correlation.alpha")]
    chosen = {id(param) for param in alphas}
    return {**groups, "default": [param for param in groups["default"] if id(param) not in chosen], "alpha": alphas}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def stream_batches(loader: DataLoader, sampler: distributed.EpochSampler, generator: torch.Generator,
                   seed: int, step: int) -> Iterator[Batch]:
    """Training batches from `step` on, cycling over passes; pass e is shuffled by (seed, e)."""
    epoch, skip = divmod(step, sampler.batches_per_epoch)
    while True:
        sampler.set_position(epoch, skip)
        generator.manual_seed(seed * 1_000_003 + epoch)
        yield from loader
        epoch, skip = epoch + 1, 0


@contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """While active, the first Ctrl-C (SIGINT) sets the event instead of raising; a second one raises."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


# --- evaluation ---------------------------------------------------------------------------------------

def run_baselines(config: ExperimentConfig) -> Baselines:
    """The single-task baselines of every task of `config` that its delta_m compares against.

    They come from `train.baselines_file` (default: the packaged file), setting `train.baseline_setting`;
    a missing file, setting or task raises an error that names it.
    """
    baselines = load_baselines(config.train.baselines_file or BASELINES_FILE, config.train.baseline_setting)
    missing = [task for task in config.model.task_names if task not in baselines]
    if missing:
        raise MissingBaselineError(f"no single-task baseline for {', '.join(missing)} in {baselines.source}; "
                                   f"store them with save_baseline or set train.baselines_file")
    return baselines


# --- the run folder -----------------------------------------------------------------------------------

def with_delta_m(metrics: dict[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    """`metrics` with "delta_m" against the run's stored baselines added when the run is judged by it
    (train.best_metric=delta_m): what its evaluations record, and what `densemtl-lab eval` reports."""
    if config.train.best_metric == "delta_m":
        metrics["delta_m"] = delta_m(metrics, run_baselines(config))
    return metrics


def check_resumable(run_dir: Path, config: ExperimentConfig) -> None:
    """RunDirError unless `run_dir`'s config.json is `config` but for RESUMABLE_CHANGES."""
    try:
        old = ExperimentConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    except (ValueError, OSError) as error:
        raise RunDirError(f"cannot resume {run_dir}: its config.json is unreadable ({error}); "
                          "pass --overwrite to start again") from None
    if config.model.num_classes is None:  # "the dataset's classes", which the run folder stores resolved
        config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                       num_classes=old.model.num_classes))
    changed = [key for key in config_differences(old, config) if key not in RESUMABLE_CHANGES]
    if changed:
        raise RunDirError(f"cannot resume {run_dir}: its config differs in {', '.join(changed)}; "
                          "pass --overwrite to start again or choose another --run-dir")


def prepare_run_dir(run_dir: Path, config: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    """Create `run_dir`, or check that `resume` may continue it, or clear it when `overwrite`."""
    config_file = run_dir / "config.json"
    if run_dir.exists() and any(run_dir.iterdir()):
        if not config_file.is_file():
            raise RunDirError(f"run folder {run_dir} is not empty and holds no config.json (not a "
                              "densemtl-lab run); choose another --run-dir")
        if overwrite:
            shutil.rmtree(run_dir)
        elif resume:
            check_resumable(run_dir, config)
        else:
            raise RunDirError(f"run folder {run_dir} already exists; pass --resume to continue it, "
                              "--overwrite to start it again, or choose another --run-dir")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_file, config.to_dict())


# --- the adaptation hook -----------------------------------------------------------------------------

class AdaptationHook(Protocol):
    """What the trainer calls of an unsupervised domain adaptation (densemtl_lab.uda implements it).

    Each step, after the supervised backward, `backward(batch, outputs)` adds the gradients of the
    target-domain losses and returns those losses detached, named as `loss_names` (history columns
    "loss/<name>"); after the network's optimiser step, `step(scaler)` updates the adaptation's own
    parameters (through the fp16 gradient scaler when there is one). `state_dict` and
    `load_state_dict` travel in the trainer's checkpoints.
    """

    loss_names: tuple[str, ...]

    def backward(self, batch: Batch, outputs: Outputs) -> dict[str, torch.Tensor]: ...

    def step(self, scaler: torch.amp.GradScaler | None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


#: Builds the hook of one adapt.method for a trainer: (trainer, target training set or None) -> hook.
AdaptationBuilder = Callable[["Trainer", "Dataset | None"], AdaptationHook]
#: adapt.method values the trainer runs without a hook: source only, and the labelled-target oracle.
METHODS_WITHOUT_HOOK = ("none", "oracle")
_ADAPTATIONS: dict[str, AdaptationBuilder] = {}


def register_adaptation(method: str, build: AdaptationBuilder) -> None:
    """Make the trainer build its hook with `build(trainer, target_set)` when adapt.method is `method`."""
    if method not in ADAPT_METHODS or method in METHODS_WITHOUT_HOOK:
        raise ValueError(f"adapt.method={method!r} takes no adaptation hook; the hooked methods are "
                         f"{', '.join(m for m in ADAPT_METHODS if m not in METHODS_WITHOUT_HOOK)}")
    _ADAPTATIONS[method] = build


# --- the trainer -------------------------------------------------------------------------------------

class Trainer:
    """Train one model on one config; `fit()` runs to `train.steps` and returns a TrainResult.

    `run_dir=None` keeps everything in memory (no checkpoints). `resume=True` continues the run folder
    from its newest checkpoint (and starts it when it is new); `overwrite=True` clears it first.
    `train_set` / `val_set` / `model` (and, for adaptation, the target training set `target_set`)
    replace the ones the config would build.

    Plug-ins (the adaptation hook) may use: `config`, `tasks`, `model`, `network` (the model as it
    trains, wrapped for several processes), `device`, `channels_last`, `context`, `train_set`, `step`,
    `autocast()`, `backward(loss)` and `training_loader(dataset, seed)`.
    """

    def __init__(self, config: ExperimentConfig, run_dir: str | Path | None = None, *,
                 resume: bool = False, overwrite: bool = False, train_set: Dataset | None = None,
                 val_set: Dataset | None = None, model: nn.Module | None = None,
                 target_set: Dataset | None = None) -> None:
        settings = config.train
        self.context = distributed.init_from_env(settings.device)
        self.device = distributed.process_device(self.context, settings.device)
        configure_backend(self.device, settings.num_threads, self.context)
        self.channels_last = channels_last_on(self.device, settings.channels_last)
        seed_everything(settings.seed)
        self.tasks = config.model.task_names
        target = "target" if config.data.target_dataset else None
        trained_on = "target" if config.adapt.method == "oracle" else None  # the oracle: labelled target
        self.train_set = (train_set if train_set is not None
                          else build_dataset(config.data, "train", trained_on, self.tasks))
        self.val_set = val_set if val_set is not None else build_dataset(config.data, "val", target, self.tasks)
        if config.model.num_classes is None:  # the dataset's classes, stored resolved in the run folder
            classes = getattr(self.train_set, "num_classes", 19)
            config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_classes=classes))
        self.config = config
        if config.best_metric == "delta_m":
            run_baselines(config)  # a missing baseline stops the run now, not at its first evaluation
        self.model = model if model is not None else build_model(
            config.model.name, self.tasks, num_classes=config.model.num_classes, **config.model.build_options())
        place_model(self.model, self.device, self.channels_last)
        self.criterion = MultiTaskLoss.from_config(config).to(self.device)
        self._build_optimisation()
        self.network = self._wrap_for_processes(self.model)
        self.loader, self.sampler, self.loader_generator = self.training_loader(self.train_set, settings.seed)
        self.adaptation = self._build_adaptation(target_set)
        self.step = 0
        self.history = History()
        self.metrics: dict[str, Any] = {}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.checkpoints: CheckpointManager | None = None
        if self.run_dir is not None:
            self._open_run_dir(resume, overwrite)

    def _build_adaptation(self, target_set: Dataset | None) -> AdaptationHook | None:
        """The registered hook of `adapt.method` (None for source-only and oracle runs)."""
        method = self.config.adapt.method
        if method in METHODS_WITHOUT_HOOK:
            return None
        if method not in _ADAPTATIONS:
            raise ConfigError(f"adapt.method={method!r} has no adaptation registered; import densemtl_lab.uda "
                              "(which registers it) before building the Trainer, as the densemtl-lab command "
                              "and densemtl_lab.notebook do")
        return _ADAPTATIONS[method](self, target_set)

    def _build_optimisation(self) -> None:
        """Optimiser (loss-weighting parameters join the "default" group, a pose network its own), StepLR,
        autocast, scaler."""
        groups = self.model.parameter_groups()
        groups = {"backbone": groups["backbone"],
                  "default": [*groups["default"], *self.criterion.weighting.parameters()],
                  "pose": list(self.criterion.label_free.parameters())}
        if self.config.optim.alpha_lr is not None:
            groups = alpha_group(groups, self.model)
        self.optimizer = build_optimizer(self.config.optim, groups)
        self.parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        optim = self.config.optim
        self.scheduler = (torch.optim.lr_scheduler.StepLR(self.optimizer, optim.scheduler_step, optim.scheduler_gamma)
                          if optim.scheduler_step else None)
        self.amp_dtype = autocast_dtype(self.config.train.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.aggregation = self._build_aggregation()
        every = self.config.train.conflict_every
        self.conflicts = None if every is None else ConflictLog(self.model, self.tasks, every, self.context)
        self.conflict_row: dict[str, float] = {}  # the last step's gradient statistics (train_step)

    def _build_aggregation(self) -> Any:
        """The torchjd gradient aggregation of `train.aggregator` (densemtl_lab.aggregation), or None."""
        name = self.config.train.aggregator
        if name == "none":
            return None
        if self.scaler is not None:
            raise ConfigError(f"train.aggregator={name!r} cannot run with fp16 autocast and its gradient scaler "
                              "(train.amp=auto chose fp16: this GPU has no bf16); set train.amp=off")
        from densemtl_lab.aggregation import GradientAggregation  # imports torchjd only when used

        return GradientAggregation(name, self.model, self.criterion, self.tasks, self.context)

    def training_loader(self, dataset: Dataset, seed: int
                        ) -> tuple[DataLoader, distributed.EpochSampler, torch.Generator]:
        """A shuffled, drop-last loader over `dataset` (with its sampler and generator, for `stream_batches`)."""
        settings = self.config.train
        sampler = distributed.EpochSampler(len(dataset), settings.batch_size, seed, self.context)
        generator = torch.Generator()
        loader = DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, drop_last=True,
                            num_workers=self.config.data.num_workers, pin_memory=self.device.type == "cuda",
                            generator=generator)
        return loader, sampler, generator

    def _open_run_dir(self, resume: bool, overwrite: bool) -> None:
        """Prepare the run folder (rank 0) and continue from its newest checkpoint when resuming."""
        if self.context.is_main:
            prepare_run_dir(self.run_dir, self.config, resume, overwrite)
        self._barrier()
        self.checkpoints = CheckpointManager(self.run_dir / "checkpoints", self.config.train.keep_last,
                                             self.config.best_metric)
        latest = self.checkpoints.latest()
        if resume and latest is not None:
            self.load_state_dict(load_checkpoint(latest, map_location=self.device), source=f"checkpoint {latest}")

    def _wrap_for_processes(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around `model` when several processes train, else `model`."""
        if not self.context.enabled:
            return model
        # DDP warns that the 1x1 heads' [K, C, 1, 1] gradients have other (equivalent) strides than
        # their channels_last weights; both layouts order the memory the same way, so it costs nothing.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, gradient_as_bucket_view=True)

    # -- state ------------------------------------------------------------------------------------
    def _class_info(self) -> dict[str, Any]:
        info = {name: getattr(self.train_set, name) for name in ("class_names", "class_ids", "palette")
                if hasattr(self.train_set, name)}
        return json.loads(json.dumps(info))

    def model_state(self) -> dict[str, Any]:
        """What evaluation and prediction need: weights, config, tasks, classes (no optimiser)."""
        return {"format": FORMAT_VERSION, "step": self.step, "tasks": list(self.tasks),
                "config": self.config.to_dict(), "model": self.model.state_dict(),
                "classes": self._class_info(), "metrics": self.metrics}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue as if never stopped."""
        epoch, batch = divmod(self.step, self.sampler.batches_per_epoch)
        return {**self.model_state(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "criterion": self.criterion.state_dict(),
                "rng": capture_rng(), "data": {"epoch": epoch, "batch": batch},
                "history": self.history.to_dict(),
                "adaptation": None if self.adaptation is None else self.adaptation.state_dict(),
                "aggregator": None if self.aggregation is None else self.aggregation.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Continue from a `state_dict()` (the model is loaded strictly; errors name `source`)."""
        load_model_state(self.model, state["model"], source=source)
        self.optimizer.load_state_dict(state["optimizer"])
        align_optimizer_state(self.optimizer)  # the run may have been saved in another memory format
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.criterion.load_state_dict(state["criterion"])
        if self.adaptation is not None:
            self.adaptation.load_state_dict(state["adaptation"])
        if self.aggregation is not None:
            self.aggregation.load_state_dict(state.get("aggregator"))
        restore_rng(state["rng"])
        self.step = int(state["step"])
        self.history = History.from_dict(state["history"])
        self.metrics = state["metrics"]

    # -- one step -----------------------------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        """The forward's autocast context (disabled in full precision)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of `loss`, scaled by the fp16 gradient scaler when there is one."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    @property
    def loss_names(self) -> list[str]:
        """History keys of `train_step`'s values: the total, each task, then the adaptation's losses."""
        extra = [] if self.adaptation is None else [f"loss/{name}" for name in self.adaptation.loss_names]
        return ["loss", *(f"loss/{task}" for task in self.tasks), *extra]

    def train_step(self, batch: Batch) -> list[float]:
        """Forward, loss, backward (+ adaptation), clip, update; returns the `loss_names` values (one host sync).

        With `train.aggregator` the losses are checked first and the backward is torchjd's
        (`GradientAggregation.backward`): the aggregated Jacobian for the encoder, the task-side
        gradients for everything else; clipping and the update are the same. On a step that
        `train.conflict_every` measures, `conflict_row` receives the task gradients' statistics
        (densemtl_lab.conflicts) before the backward; otherwise it is emptied.
        """
        batch = to_device(batch, self.device, self.channels_last)
        measured = self.conflicts is not None and self.conflicts.due(self.step + 1)
        # under torchrun the aggregation averages the ranks' Jacobians itself: DDP must not reduce .grad
        unsynced = self.aggregation is not None and self.context.enabled
        with (self.autocast(), self.aggregation.capture() if self.aggregation is not None else nullcontext(),
              self.network.no_sync() if unsynced else nullcontext(),
              task_losses(self.criterion) if measured else nullcontext() as losses):
            outputs = self.network(batch["image"])
            total, parts = self.criterion(outputs, batch)
        self.conflict_row = {}
        if measured:
            scale = self.scaler.get_scale() if self.scaler is not None else 1.0
            self.conflict_row = self.conflicts.measure(losses, self.criterion.current_weights(), scale)
        self.optimizer.zero_grad(set_to_none=True)
        if self.aggregation is not None:
            values = self._checked_loss_values(total, parts, {})  # before the solvers see a NaN
            self.aggregation.backward()
        else:
            self.backward(total)
            extra = self.adaptation.backward(batch, outputs) if self.adaptation is not None else {}
            distributed.average_gradients(self.criterion.parameters(), self.context)
            values = self._checked_loss_values(total, parts, extra)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.config.optim.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.optim.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
        else:
            self.optimizer.step()
        if self.adaptation is not None:
            self.adaptation.step(self.scaler)
        if self.scaler is not None:
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return values

    def _checked_loss_values(self, total: torch.Tensor, parts: Mapping[str, torch.Tensor],
                             extra: Mapping[str, torch.Tensor]) -> list[float]:
        """The `loss_names` values (averaged over processes; the step's host sync); NonFiniteLossError on NaN/inf."""
        values = torch.stack([total.detach(), *(parts[task] for task in self.tasks), *extra.values()]).float()
        values = distributed.all_reduce_mean(values, self.context).tolist()
        if not all(math.isfinite(value) for value in values):
            raise NonFiniteLossError(self._non_finite_message(values))
        return values

    def _non_finite_message(self, values: list[float]) -> str:
        losses = dict(zip((name.removeprefix("loss/") for name in self.loss_names[1:]), values[1:]))
        task, value = next(((t, v) for t, v in losses.items() if not math.isfinite(v)),
                           ("total", values[0]))
        kept = self.checkpoints.latest() if self.checkpoints is not None else None
        where = f"the last good checkpoint is {kept}" if kept else "no checkpoint was written"
        return (f"loss of task {task!r} is {value} at step {self.step + 1}; the run stopped and "
                f"{where}; lower optim.lr or check the data")

    # -- the loop -----------------------------------------------------------------------------------
    def _batches(self) -> Iterator[Batch]:
        """Training batches from the current step on, cycling over passes (reshuffled per pass)."""
        return stream_batches(self.loader, self.sampler, self.loader_generator, self.config.train.seed,
                              self.step)

    def _stop_requested(self, stop: threading.Event) -> bool:
        """Whether Ctrl-C reached this process or, in a distributed run, any of them."""
        if not self.context.enabled:
            return stop.is_set()
        flag = torch.tensor([float(stop.is_set())], device=self.device)
        return distributed.all_reduce_mean(flag, self.context).item() > 0

    def _barrier(self) -> None:
        if self.context.enabled:
            torch.distributed.barrier()

    def evaluate(self, dataset: Dataset | None = None) -> dict[str, Any]:
        """Metrics of the current model on `dataset` (default: the validation split), with "delta_m"
        against the stored baselines when it picks the best checkpoint (train.best_metric)."""
        distributed.broadcast_buffers(self.model, self.context)
        results: dict[str, Any] = evaluate(self.model, self.val_set if dataset is None else dataset,
                                           device=self.device, context=self.context,
                                           **self.config.evaluation_options())
        return with_delta_m(results, self.config)

    def _record_evaluation(self) -> None:
        self.metrics = self.evaluate()
        row = {"step": self.step, **flatten_metrics(self.metrics)}
        row.update({f"weight/{task}": float(w) for task, w in self.criterion.current_weights().items()})
        self.history.evals.append(row)
        if self.checkpoints is not None and self.context.is_main:
            value = row.get(self.config.best_metric, float("nan"))
            if self.checkpoints.is_better(value):
                self.checkpoints.save_best(self.model_state(), value, self.step)

    def save_checkpoint(self) -> Path | None:
        """Write the resumable checkpoint of the current step and the history (rank 0)."""
        path = None
        if self.checkpoints is not None and self.context.is_main:
            path = self.checkpoints.save(self.state_dict(), self.step)
            self.history.write(self.run_dir)
        self._barrier()
        return path

    def fit(self, until: int | None = None) -> TrainResult:
        """Train to `train.steps` (from the resumed step), evaluating and checkpointing on schedule.

        `until` pauses at that step instead, with an evaluation and a checkpoint there: a later
        `Trainer(..., resume=True).fit()` goes on exactly as if the run had never stopped.
        """
        settings = self.config.train
        end = settings.steps if until is None else int(until)
        if not 1 <= end <= settings.steps:
            raise ValueError(f"until={until} must lie between 1 and train.steps={settings.steps}")
        self.model.train()
        interrupted = False
        start_step = self.step
        bar = tqdm(total=settings.steps, initial=self.step, unit="step", dynamic_ncols=True,
                   desc=f"{self.config.model.name} {self.config.model.tasks}",
                   disable=settings.quiet or not self.context.is_main)
        running = None
        batches = self._batches()
        with bar, stop_on_interrupt() as stop:
            while self.step < end:
                lrs = {f"lr/{group['name']}": group["lr"] for group in self.optimizer.param_groups}
                values = self.train_step(next(batches))
                self.step += 1
                self.history.steps.append({"step": self.step, "loss": values[0], **lrs,
                                           **dict(zip(self.loss_names[1:], values[1:])), **self.conflict_row})
                running = values[0] if running is None else 0.9 * running + 0.1 * values[0]
                bar.set_postfix(loss=f"{running:.4g}", refresh=False)
                bar.update(1)
                last = self.step == end
                if last or self.step % settings.eval_every == 0:
                    self._record_evaluation()
                stopping = self._stop_requested(stop)
                if last or self.step % settings.checkpoint_every == 0 or stopping:
                    self.save_checkpoint()
                if stopping:
                    interrupted = not last
                    break
        return self._finish(interrupted, start_step)

    def _finish(self, interrupted: bool, start_step: int) -> TrainResult:
        distributed.broadcast_buffers(self.model, self.context)
        last = best = None
        if self.checkpoints is not None:
            last = self.checkpoints.latest()
            best = self.checkpoints.best_path if self.checkpoints.best_record() else None
            if self.context.is_main:
                self.history.write(self.run_dir)
                write_json_atomic(self.run_dir / "metrics.json",
                                  {"step": self.step, "metrics": self.metrics, "interrupted": interrupted,
                                   "best": self.checkpoints.best_record()})
        return TrainResult(self.model, self.history, self.metrics, self.step, self.run_dir, last, best,
                           interrupted, start_step)


def train(config: ExperimentConfig, run_dir: str | Path | None = None, *, resume: bool = False,
          overwrite: bool = False, **trainer_options: Any) -> TrainResult:
    """Build a Trainer for `config` and run it (see Trainer for the options)."""
    return Trainer(config, run_dir, resume=resume, overwrite=overwrite, **trainer_options).fit()


def load_trained_model(path: str | Path, device: str | torch.device = "cpu"
                       ) -> tuple[nn.Module, ExperimentConfig, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, load its weights strictly, in eval mode.

    Returns (model, config, checkpoint). Works for `best.pt` and periodic checkpoints alike.
    """
    state = load_checkpoint(path, map_location=device)
    try:
        config = ExperimentConfig.from_dict(state["config"])
    except ConfigError as error:
        raise ConfigError(f"checkpoint {path}: {error}") from None
    model = build_model(config.model.name, config.model.task_names, num_classes=config.model.num_classes,
                        **{**config.model.build_options(), "weights": None})
    load_model_state(model, state["model"], source=f"checkpoint {path}")
    return model.to(device).eval(), config, state
