"""Experiment configuration: four small dataclasses, the named profiles, and dotted overrides.

An `ExperimentConfig` is `data` + `model` + `optim` + `train` + `adapt`. It round-trips through plain JSON-able
dicts (`to_dict` / `from_dict`), loads user YAML files with `yaml.safe_load` (`load_config`), and takes
command-line style overrides such as `override(config, "train.steps=10")`, whose values are parsed as
JSON-ish literals (numbers, true/false/null, lists, strings), never evaluated.

The profiles (`PROFILES`, `get_profile`) set everything that one word in a notebook's parameters cell
should set: `smoke` (CI, seconds), `quick` (the default: a 2-core laptop CPU, about a minute per
training), `course` (the shipped studies: 1,200 steps, minutes per training there), `full` (one GPU),
and `paper-<dataset>` (the settings of the official `configs/<dataset>/*.yml` and, for the two
adaptation pairs, `configs/da/*`; see docs/faithfulness.md, "Training"). Configs are frozen: every
change makes a new config.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union, get_args, get_origin, get_type_hints

import yaml

from densemtl_lab.tasks import TASKS, parse_tasks, task_letters

_DECODER_OPTIONS = ("aspp_channels", "dropout")
#: The models `densemtl_lab.models.build_model` builds and the options each takes beyond the common
#: arguments (its BUILDERS and `model_options`; named here so that configs load without torch and
#: sit below the models; tests/test_build_model.py checks that both agree).
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "stl": _DECODER_OPTIONS,
    "stl-deeplab": _DECODER_OPTIONS,
    "mtl": _DECODER_OPTIONS,
    "padnet": ("padnet_channels",),
    "3ways": _DECODER_OPTIONS,
    "densemtl": (*_DECODER_OPTIONS, "xtam_ds", "self_attention", "correlation", "alpha", "full_sa",
                 "exchange_mode"),
}
MODEL_NAMES = tuple(MODEL_OPTIONS)
#: Datasets `densemtl_lab.data.build.build_dataset` knows.
DATASET_NAMES = ("toy", "cityscapes", "synthia", "vkitti2", "nyuv2")
#: train.channels_last: NCHW, the whole model in channels_last, or its task side only (`train.place_model`).
CHANNELS_LAST_SETTINGS = (False, True, "decoders")
#: Domain adaptation methods (`densemtl_lab.uda`): source-only, the two unsupervised ones, labelled target.
ADAPT_METHODS = ("none", "adversarial", "entropy", "oracle")
#: Gradient aggregators of the shared encoder (`densemtl_lab.aggregation`, through torchjd; named
#: here so that configs load without it; tests/test_aggregation.py checks that both agree). `none`:
#: the ordinary backward of the weighted sum of the task losses.
AGGREGATOR_NAMES = ("none", "sum", "mean", "mgda", "pcgrad", "cagrad", "imtl-g", "aligned-mtl", "nash-mtl",
                    "upgrad")
#: Fields that may differ when a run folder is resumed (they change how, not what, is trained).
RESUMABLE_CHANGES = frozenset({
    "train.steps", "train.quiet", "train.device", "train.num_threads", "train.channels_last", "data.num_workers",
    "data.root", "data.target_root", "train.baselines_file", "train.conflict_every",
})


#: A value of a real dataset loader's keyword option (`data.options`), as YAML or `-p` gives it.
LoaderOption = Union[str, bool, int, float, list]


class ConfigError(ValueError):
    """A configuration value, key, file or profile name that cannot be used."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    """Which images the model sees."""

    dataset: str = "toy"                 # toy | cityscapes | synthia | vkitti2 | nyuv2
    root: str | None = None              # folder of a real dataset (or of a toy set written to disk)
    size: tuple[int, int] = (64, 128)    # working H, W (images are resized to it); divisible by 16
    crop: tuple[int, int] | None = None  # random crop after resizing (the VKITTI2 -> Cityscapes recipe)
    classes: int | None = None           # class set of a real dataset (None: the loader's default)
    train_length: int = 2000             # toy: scenes in the train split
    val_length: int = 64                 # toy: scenes in the val split
    scene_seed: int = 0                  # toy: which scenes (the training seed is train.seed)
    severity: float = 0.5                # toy: strength of the target domain's appearance shift
    domain: str = "source"               # toy: domain of the training scenes
    hflip: bool = False                  # random horizontal flip (p = 0.5) of training samples
    num_workers: int = 0                 # DataLoader workers; 0 on 2-core CPUs (workers brought no speed-up there)
    target_dataset: str | None = None    # adaptation: the unlabelled target domain, evaluated on
    target_root: str | None = None       # adaptation: folder of the target dataset
    target_size: tuple[int, int] | None = None  # adaptation: the target's working H, W (None: data.size)
    options: dict[str, LoaderOption] | None = None         # real dataset loader options, e.g. {variation: clone}
    target_options: dict[str, LoaderOption] | None = None  # the same for the target dataset
    train_split: str = "train"           # the source split trained on: train, or all (SYNTHIA/VKITTI2, for UDA)
    sequence: bool = False               # toy: training samples with frames -1 and +1 (self-supervised depth)

    def __post_init__(self) -> None:
        for name in (self.dataset, self.target_dataset or "toy"):
            _check(name in DATASET_NAMES,
                   f"data.dataset={name!r} is unknown; use one of {', '.join(DATASET_NAMES)}")
        for key in ("size", "crop", "target_size"):
            value = getattr(self, key)
            _check(value is None or all(side > 0 and side % 16 == 0 for side in value),
                   f"data.{key}={value} must be positive and divisible by 16 (the encoder's stride)")
        for key in ("size", "target_size"):
            size = getattr(self, key)
            _check(self.crop is None or size is None or all(c <= s for c, s in zip(self.crop, size)),
                   f"data.crop={self.crop} must fit in data.{key}={size}")
        _check(self.train_split in ("train", "all"),
               f"data.train_split={self.train_split!r} must be 'train' or 'all'")
        _check(self.train_split == "train" or self.dataset in ("synthia", "vkitti2"),
               f"data.train_split='all' needs a dataset with a seeded train/val split (synthia, vkitti2), "
               f"not {self.dataset!r}")
        _check(self.train_length >= 1 and self.val_length >= 1,
               "data.train_length and data.val_length must be at least 1")
        _check(0.0 <= self.severity <= 1.0, f"data.severity={self.severity} must lie in [0, 1]")
        _check(self.domain in ("source", "target"),
               f"data.domain={self.domain!r} must be 'source' or 'target'")
        _check(self.num_workers >= 0, f"data.num_workers={self.num_workers} must be >= 0")
        if self.sequence:
            _check(self.dataset in ("toy", "cityscapes"), f"data.sequence=true reads frame triplets, which the toy "
                   f"dataset and Cityscapes (leftImg8bit_sequence) have, not data.dataset={self.dataset!r}")
            _check(self.dataset != "toy" or self.root is None, "data.sequence=true renders the toy sequences on the "
                   f"fly; a toy set written to disk (data.root={self.root!r}) holds single frames: set data.root=null")


@dataclass(frozen=True)
class ModelConfig:
    """Which network (densemtl_lab.models.build_model) and its options."""

    name: str = "densemtl"               # stl | stl-deeplab | mtl | padnet | 3ways | densemtl
    tasks: str = "SDN"                   # task letters, stored canonical (S, D, N, E order)
    backbone: str = "resnet18"           # resnet18 | resnet34 | resnet50 | resnet101
    weights: str | None = None           # None (from scratch), "imagenet" or a local weights file
    decoder_widths: tuple[int, int, int, int, int] = (16, 32, 32, 64, 64)  # per decoder level 0..4
    num_classes: int | None = None       # semseg classes (None: the dataset's)
    xtam_ds: int = 4                     # xTAM attention downsampling
    self_attention: bool = True          # xTAM self-attention branch
    correlation: bool = True             # xTAM correlation-guided branch
    alpha: bool = True                   # learnable zero-initialised scale of the correlation branch
    full_sa: bool = False                # self-attention branch with C instead of C/2 channels
    exchange_mode: str = "add"           # mTEB: add | prod | replace
    aspp_channels: int | None = None     # None: decoder_widths[4]
    dropout: float = 0.5                 # after the ASPP
    padnet_channels: int = 256           # PAD-Net's distillation width
    # code (the depth head regresses the normalised inverse depth) | disparity (a sigmoid disparity between
    # 0.1 and 100 m, the reference's self-supervised depth head; train.depth_loss=photometric)
    depth_output: str = "code"
    # photometric depth's relative poses: network (the pose network, as the reference) | dataset (the toy
    # sequence's true poses, known odometry: a lesson setting that learns depth alone; docs/faithfulness.md)
    pose_source: str = "network"
    pose_weights: str | None = None      # the pose network's ResNet-18 (photometric depth): None, imagenet or a file

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", task_letters(parse_tasks(self.tasks)))
        _check(self.name in MODEL_NAMES,
               f"model.name={self.name!r} is unknown; use one of {', '.join(MODEL_NAMES)}")
        _check(all(width > 0 for width in self.decoder_widths),
               f"model.decoder_widths={self.decoder_widths} must be positive")
        _check(self.exchange_mode in ("add", "prod", "replace"),
               f"model.exchange_mode={self.exchange_mode!r} must be add, prod or replace")
        _check(self.xtam_ds >= 1, f"model.xtam_ds={self.xtam_ds} must be >= 1")
        _check(self.depth_output in ("code", "disparity"),
               f"model.depth_output={self.depth_output!r} must be code or disparity")
        _check(self.pose_source in ("network", "dataset"),
               f"model.pose_source={self.pose_source!r} must be network or dataset")

    @property
    def task_names(self) -> tuple[str, ...]:
        """The tasks as full names in canonical order."""
        return parse_tasks(self.tasks)

    def build_options(self) -> dict[str, Any]:
        """Keyword arguments of `build_model` beyond name, tasks and num_classes.

        Of the option fields, only those the chosen model takes (`MODEL_OPTIONS`) are passed.
        """
        options = {key: getattr(self, key) for key in MODEL_OPTIONS[self.name]}
        return {"backbone": self.backbone, "weights": self.weights,
                "decoder_widths": self.decoder_widths, "depth_output": self.depth_output, **options}


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule (two groups: backbone and everything else)."""

    name: str = "adam"                   # adam (the reference's DenseMTL) | sgd (its STL baselines)
    # From scratch, one LR for both groups. Quick profile, DenseMTL SDN, 100 steps (mean loss of the
    # last 20 / val mIoU): 1e-3 36.2 / 71.6 %; 3e-4 46.8 / 61.0 %; 2e-3 36.3 / 74.7 % but depth RMSE
    # 6.4 m instead of 5.7 m; backbone 3e-4 (the reference's ratio, meant for ImageNet weights) 36.3 / 73.1 %.
    lr: float = 1e-3                     # decoders, exchange modules, loss-weighting parameters
    backbone_lr: float = 1e-3            # encoder
    betas: tuple[float, float] = (0.9, 0.98)  # Adam
    momentum: float = 0.9                # SGD
    weight_decay: float = 0.0            # the reference: 0 with Adam, 5e-4 with SGD
    clip_grad_norm: float | None = 10.0  # None: no clipping (the adaptation trainer's setting)
    scheduler_step: int | None = None    # StepLR period in iterations (None: constant LR)
    scheduler_gamma: float = 0.1         # StepLR factor
    # Lesson-only deviation (docs/faithfulness.md): the correlation branches' alpha learn at this rate
    # (None: optim.lr, as the reference). Zero-initialised, alpha opens too slowly for short CPU runs.
    alpha_lr: float | None = None
    pose_lr: float = 1e-6                # the pose network of photometric depth (the reference's monodepth.pose_net)

    def __post_init__(self) -> None:
        _check(self.name in ("adam", "sgd"), f"optim.name={self.name!r} must be 'adam' or 'sgd'")
        _check(self.lr > 0 and self.backbone_lr >= 0,
               f"optim.lr={self.lr} must be > 0 and optim.backbone_lr={self.backbone_lr} >= 0")
        _check(self.clip_grad_norm is None or self.clip_grad_norm > 0,
               f"optim.clip_grad_norm={self.clip_grad_norm} must be > 0 or null")
        _check(self.scheduler_step is None or self.scheduler_step >= 1,
               f"optim.scheduler_step={self.scheduler_step} must be >= 1 or null")
        _check(0.0 < self.scheduler_gamma <= 1.0,
               f"optim.scheduler_gamma={self.scheduler_gamma} must lie in (0, 1]")
        _check(self.alpha_lr is None or self.alpha_lr > 0,
               f"optim.alpha_lr={self.alpha_lr} must be > 0 or null (null: optim.lr)")
        _check(self.pose_lr >= 0, f"optim.pose_lr={self.pose_lr} must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """The loop: length, evaluation, checkpoints, seed, device and loss."""

    # quick: each lesson cell must train in <= 60 s on 2 cores. A DenseMTL SDN step at 64x128 took
    # 0.75 s at batch 8 and 0.46 s at batch 4 here (2 threads), so batch 4 x 80 steps is ~40 s plus
    # evaluation; batch 8 x 100 steps took 115 s in notebook 04 (the `full` profile is for results).
    steps: int = 80                      # optimiser steps (iterations)
    batch_size: int = 4                  # per process
    eval_every: int = 80                 # evaluate every N steps (and after the last one)
    eval_batches: int | None = None      # val batches per evaluation (None: the whole val split)
    checkpoint_every: int = 80           # checkpoint every N steps (and after the last one)
    keep_last: int = 1                   # periodic checkpoints kept
    best_metric: str | None = None       # "task/metric" or "delta_m" (None: first task's main metric)
    baseline_setting: str | None = None  # baselines.json setting for delta_m
    baselines_file: str | None = None    # the baselines file for delta_m (None: the packaged one)
    seed: int = 0
    device: str = "auto"                 # auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:1 | mps
    amp: str = "auto"                    # auto (CUDA: bf16, else fp16; CPUs with native bf16: bf16; else off) | off | bf16 | fp16
    # true: the whole model in channels_last; "decoders": the task side only (decoders, exchange, heads), the
    # encoder in NCHW handing its features over in channels_last; false: NCHW. The whole model pays for larger
    # inputs (+28 % at 128x256, measured on a 2-core CPU, and on GPUs); at the toy sizes the encoder's small
    # dilated convolutions are slower in it while the decoders and the exchange are faster, so the quick and
    # course profiles use "decoders" (docs/benchmarks.md, "The lesson model's throughput").
    channels_last: bool | str = False
    num_threads: int | None = None       # CPU threads (None: torch's default, divided among DDP ranks)
    weighting: str = "fixed"             # fixed | uncertainty | dwa
    # none (the weighted sum's backward) | a gradient aggregator of the shared encoder (AGGREGATOR_NAMES,
    # densemtl_lab.aggregation): needs weighting=fixed, several tasks, no fp16
    aggregator: str | None = "none"      # null (what `-p train.aggregator=none` reads as) is stored as "none"
    loss_weights: dict[str, float] | None = None  # fixed weights (None: tasks.default_weights)
    # log the task gradients' norms and pairwise cosines on the shared encoder every N steps
    # (densemtl_lab.conflicts; one extra backward per task on those steps); None: off
    conflict_every: int | None = None
    # berhu | l1 | photometric (learnt from frames -1 and +1, no depth label: needs data.sequence=true and
    # model.depth_output=disparity; densemtl_lab.photometric)
    depth_loss: str = "berhu"
    quiet: bool = False                  # no progress bar

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_every", "checkpoint_every", "keep_last"):
            _check(getattr(self, key) >= 1, f"train.{key}={getattr(self, key)} must be >= 1")
        _check(self.eval_batches is None or self.eval_batches >= 1,
               f"train.eval_batches={self.eval_batches} must be >= 1 or null")
        _check(self.conflict_every is None or self.conflict_every >= 1,
               f"train.conflict_every={self.conflict_every} must be >= 1 or null (off)")
        _check(self.amp in ("auto", "off", "bf16", "fp16"),
               f"train.amp={self.amp!r} must be auto, off, bf16 or fp16")
        _check(self.channels_last in CHANNELS_LAST_SETTINGS,
               f"train.channels_last={self.channels_last!r} must be true, false or decoders")
        _check(self.weighting in ("fixed", "uncertainty", "dwa"),
               f"train.weighting={self.weighting!r} must be fixed, uncertainty or dwa")
        if self.aggregator is None:
            object.__setattr__(self, "aggregator", "none")
        _check(self.aggregator in AGGREGATOR_NAMES,
               f"train.aggregator={self.aggregator!r} is unknown; use one of {', '.join(AGGREGATOR_NAMES)}")
        _check(self.aggregator == "none" or self.weighting == "fixed",
               f"train.aggregator={self.aggregator!r} combines the task gradients itself; it takes the fixed "
               f"loss weights, not train.weighting={self.weighting!r} (a second balancing on top of it)")
        _check(self.aggregator == "none" or self.amp != "fp16",
               f"train.aggregator={self.aggregator!r} cannot run with train.amp='fp16': the gradient scaler "
               "scales the losses, which the aggregators do not undo; use bf16 or off")
        kinds = TASKS["depth"].loss_kinds
        _check(self.depth_loss in kinds, f"train.depth_loss={self.depth_loss!r} must be {' or '.join(kinds)}")
        _check(self.num_threads is None or self.num_threads >= 1,
               f"train.num_threads={self.num_threads} must be >= 1 or null")

    @property
    def loss_kinds(self) -> dict[str, str]:
        """{task: the kind of its loss} for `MultiTaskLoss`, from the fields that choose one (depth_loss)."""
        return {"depth": self.depth_loss}


@dataclass(frozen=True)
class AdaptConfig:
    """Unsupervised adaptation to `data.target_dataset` (docs/faithfulness.md, "Multi-task UDA"; densemtl_lab.uda)."""

    # none (source only) | adversarial | entropy | oracle (labelled target); null (what `-p adapt.method=none`
    # reads as) is stored as "none"
    method: str | None = "none"
    adversarial_weight: float = 0.005    # generator's adversarial loss weight (the reference's lambda_adv_ent)
    entropy_weight: float = 0.05         # entropy minimisation weight (ADVENT's 1e-3 x the semseg weight 50)
    discriminator_lr: float = 1e-4       # Adam, poly decay to 0 over train.steps
    discriminator_betas: tuple[float, float] = (0.9, 0.99)
    discriminator_width: int = 64        # first convolution's channels (the reference's ndf)
    poly_power: float = 0.9              # discriminator learning-rate decay (1 - step / steps) ** power

    def __post_init__(self) -> None:
        if self.method is None:
            object.__setattr__(self, "method", "none")
        _check(self.method in ADAPT_METHODS,
               f"adapt.method={self.method!r} is unknown; use one of {', '.join(ADAPT_METHODS)}")
        _check(self.adversarial_weight >= 0 and self.entropy_weight >= 0,
               f"adapt.adversarial_weight={self.adversarial_weight} and adapt.entropy_weight="
               f"{self.entropy_weight} must be >= 0")
        _check(self.discriminator_lr > 0, f"adapt.discriminator_lr={self.discriminator_lr} must be > 0")
        _check(self.discriminator_width >= 1,
               f"adapt.discriminator_width={self.discriminator_width} must be >= 1")
        _check(self.poly_power >= 0, f"adapt.poly_power={self.poly_power} must be >= 0")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: the profile it came from plus data, model, optimiser and loop settings."""

    profile: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def __post_init__(self) -> None:
        tasks = self.model.task_names
        method = self.adapt.method
        _check(method == "none" or self.data.target_dataset is not None,
               f"adapt.method={method!r} needs a target domain; set data.target_dataset (toy: the toy "
               "target domain, e.g. --target toy)")
        classes = [task for task in TASKS.values() if task.predicts_classes]
        _check(method != "entropy" or any(task.name in tasks for task in classes),
               f"adapt.method='entropy' minimises the entropy of class predictions; model.tasks="
               f"{self.model.tasks} has no {' or '.join(task.letter for task in classes)}")
        aggregator = self.train.aggregator
        _check(aggregator == "none" or len(tasks) >= 2,
               f"train.aggregator={aggregator!r} combines the gradients of several tasks; model.tasks="
               f"{self.model.tasks} has one")
        _check(aggregator == "none" or method not in ("adversarial", "entropy"),
               f"train.aggregator={aggregator!r} with adapt.method={method!r} is not supported: the "
               "adaptation losses would reach the encoder unaggregated")
        if self.train.loss_weights is not None:
            _check(set(self.train.loss_weights) == set(tasks),
                   f"train.loss_weights names {sorted(self.train.loss_weights)}; give one weight per "
                   f"task of model.tasks={self.model.tasks}: {', '.join(tasks)}")
        metric = self.train.best_metric
        if metric is not None and metric != "delta_m":
            task, _, name = metric.partition("/")
            _check(task in tasks and any(m.name == name for m in TASKS[task].metrics),
                   f"train.best_metric={metric!r} must be 'delta_m' or 'task/metric' with a task of "
                   f"model.tasks={self.model.tasks} (e.g. '{tasks[0]}/{TASKS[tasks[0]].main_metric}')")
        _check(metric != "delta_m" or self.train.baseline_setting is not None,
               "train.best_metric='delta_m' needs train.baseline_setting (a setting of baselines.json)")
        if self.train.depth_loss == "photometric":
            _check("depth" in tasks, f"train.depth_loss='photometric' learns depth; model.tasks={self.model.tasks} has no D")
            _check(self.data.sequence, "train.depth_loss='photometric' learns from neighbouring frames; set "
                   "data.sequence=true")
            _check(self.model.depth_output == "disparity", "train.depth_loss='photometric' warps with a bounded "
                   "depth; set model.depth_output=disparity (the reference's sigmoid disparity head)")
            _check(method == "none", f"train.depth_loss='photometric' with adapt.method={method!r} is not supported")

    @property
    def best_metric(self) -> str:
        """The metric that picks the best checkpoint ("task/metric" or "delta_m")."""
        if self.train.best_metric is not None:
            return self.train.best_metric
        first = self.model.task_names[0]
        return f"{first}/{TASKS[first].main_metric}"

    def evaluation_options(self) -> dict[str, Any]:
        """This run's settings as keyword arguments of `densemtl_lab.evaluation.evaluate` (beyond the
        model, the dataset, the device and the processes)."""
        return {"batch_size": self.train.batch_size, "amp": self.train.amp,
                "channels_last": self.train.channels_last, "num_workers": self.data.num_workers,
                "max_batches": self.train.eval_batches, "dataset_name": self.data.target_dataset or self.data.dataset,
                "median_scaling": self.train.depth_loss == "photometric"}

    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        """The inverse of `to_dict`; missing keys take the defaults, unknown keys raise ConfigError."""
        return merge(cls(), values)


_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig,
                              "train": TrainConfig, "adapt": AdaptConfig}


def _unknown_key(key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.rpartition(".")[2], known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(f"unknown config key {key!r}; {hint}known: {', '.join(known)}")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the field's type hint, turning lists into tuples and ints into floats."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(hint):
            return None
        for option in (arg for arg in get_args(hint) if arg is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r} is not a {hint}")
    if origin is tuple:
        args = get_args(hint)
        _check(isinstance(value, (list, tuple)) and len(value) == len(args),
               f"{key}={value!r} needs {len(args)} values, e.g. {key}=[{', '.join(['1'] * len(args))}]")
        return tuple(_coerce(item, arg, key) for item, arg in zip(value, args))
    if origin is dict:
        _check(isinstance(value, dict), f"{key}={value!r} must be a mapping")
        return {str(name): _coerce(item, get_args(hint)[1], key) for name, item in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    _check(isinstance(value, hint) and not (hint is int and isinstance(value, bool)),
           f"{key}={value!r} must be of type {hint.__name__}")
    return value


def _merge_section(section: Any, values: Mapping[str, Any], prefix: str) -> Any:
    hints = get_type_hints(type(section))
    changes = {}
    for name, value in values.items():
        if name not in hints:
            raise _unknown_key(f"{prefix}.{name}", list(hints))
        changes[name] = _coerce(value, hints[name], f"{prefix}.{name}")
    return dataclasses.replace(section, **changes)


def merge(config: ExperimentConfig, values: Mapping[str, Any]) -> ExperimentConfig:
    """`config` with the nested `values` ({"train": {"steps": 10}, "profile": "x"}) applied."""
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name == "profile":
            changes[name] = _coerce(value, str, name)
        elif name in _SECTIONS:
            _check(isinstance(value, Mapping), f"config section {name!r} must be a mapping")
            changes[name] = _merge_section(getattr(config, name), value, name)
        else:
            raise _unknown_key(name, ["profile", *_SECTIONS])
    return dataclasses.replace(config, **changes)


def parse_value(text: str) -> Any:
    """A command-line value: a JSON literal (10, 1e-3, true, null, [16, 32]), None/True/False, or text."""
    words = {"none": None, "null": None, "true": True, "false": False}
    if text.strip().lower() in words:
        return words[text.strip().lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def override(config: ExperimentConfig, *assignments: str) -> ExperimentConfig:
    """Apply "section.key=value" assignments (the command line's `-p`), e.g. "train.steps=10".

    They are applied together (the last one wins for a repeated key) and checked once, so their order
    never matters (e.g. adapt.method needs data.target_dataset).
    """
    values: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        section, dot, name = key.strip().partition(".")
        _check(bool(sep) and bool(dot) and section in _SECTIONS,
               f"-p {assignment!r}: expected SECTION.KEY=VALUE with SECTION one of "
               f"{', '.join(_SECTIONS)}, e.g. train.steps=10")
        value = parse_value(text)
        hints = get_type_hints(_SECTIONS[section])
        if name in hints and isinstance(value, (int, float, bool)) and hints[name] in (str, str | None):
            value = text  # a string field keeps the text as typed (e.g. a root named "2024")
        values.setdefault(section, {})[name] = value
    return merge(config, values)


def _keyword_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """get_profile's keywords -> nested values: a section name takes a dict, a field name its value."""
    owners: dict[str, list[str]] = {}
    for section, cls in _SECTIONS.items():
        for name in get_type_hints(cls):
            owners.setdefault(name, []).append(section)
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _SECTIONS or key == "profile":
            nested.setdefault(key, {})
            nested[key] = {**nested[key], **value} if isinstance(value, Mapping) else value
            continue
        sections = owners.get(key, [])
        if len(sections) != 1:
            raise _unknown_key(key, sorted(owners)) if not sections else ConfigError(
                f"override {key!r} is ambiguous ({', '.join(f'{s}.{key}' for s in sections)}); "
                f"pass {sections[0]}={{{key!r}: ...}} instead")
        nested.setdefault(sections[0], {})[key] = value
    return nested


def _profiles() -> dict[str, ExperimentConfig]:
    smoke = ExperimentConfig(
        profile="smoke",
        data=DataConfig(size=(32, 64), train_length=16, val_length=4),
        model=ModelConfig(decoder_widths=(8, 16, 16, 32, 32)),
        # float32 on every machine: the tests' numbers (and the notebooks' checked outputs) must not
        # depend on whether the CPU has native bf16.
        train=TrainConfig(steps=4, batch_size=2, eval_every=4, checkpoint_every=4, amp="off"),
    )
    # The dataclass defaults are the quick profile, but for its precision and memory format. Float32 on every
    # machine: with native bf16 its whole 80-step run was 1.11x faster on an Intel Xeon with AMX and 1.03x on
    # an AMD EPYC without, and over 10 seeds bf16's depth RMSE was 0.40 m (6 %) worse, paired
    # (docs/benchmarks.md, "bf16 on the CPU" and "The precision study"). channels_last on the task side only:
    # its step 1.08x faster in float32, 1.14x in bf16 (the course's), on the AMD EPYC.
    quick = ExperimentConfig(profile="quick", train=TrainConfig(amp="off", channels_last="decoders"))
    # course: the studies' profile (docs/benchmarks.md, "A CPU profile where the exchange learns"): the
    # quick model at 15x its steps, on the toy target-domain scenes at severity 1 (appearance gives the
    # class away less, so the tasks lean on each other), bf16 for speed (a lesson setting).
    course = dataclasses.replace(
        quick, profile="course", data=DataConfig(domain="target", severity=1.0),
        train=TrainConfig(steps=1200, eval_every=1200, checkpoint_every=300, amp="bf16", channels_last="decoders"),
    )
    full = ExperimentConfig(
        profile="full",
        data=DataConfig(size=(128, 256), train_length=20000, val_length=500, num_workers=4),
        model=ModelConfig(backbone="resnet50", decoder_widths=(64, 128, 128, 256, 256)),
        optim=OptimConfig(lr=3e-4, backbone_lr=3e-4, scheduler_step=15000),
        train=TrainConfig(steps=20000, batch_size=8, eval_every=1000, checkpoint_every=1000,
                          keep_last=2, channels_last=True),
    )
    profiles = {"smoke": smoke, "quick": quick, "course": course, "full": full}
    # The official configs/<dataset>/*.yml: size, classes, LR default / backbone per dataset.
    paper = {"synthia": ((512, 1024), 16, 3e-4, 2e-4), "vkitti2": ((320, 1024), 14, 3e-4, 2e-4),
             "cityscapes": ((512, 1024), 16, 1e-4, 1e-5), "nyuv2": ((448, 576), 40, 3e-4, 2e-4)}
    paper_model = ModelConfig(backbone="resnet101", weights="imagenet",
                              decoder_widths=(64, 128, 128, 256, 256))
    paper_train = TrainConfig(steps=40000, batch_size=2, eval_every=2000, checkpoint_every=2000,
                              keep_last=2, seed=42, amp="off", channels_last=True)
    for dataset, (size, classes, lr, backbone_lr) in paper.items():
        profiles[f"paper-{dataset}"] = ExperimentConfig(
            profile=f"paper-{dataset}",
            data=DataConfig(dataset=dataset, size=size, classes=classes, hflip=True, num_workers=4),
            model=paper_model,
            optim=OptimConfig(lr=lr, backbone_lr=backbone_lr, scheduler_step=30000),
            train=paper_train,
        )
    # The official configs/cityscapes/monodepth/resnet101_ours_SD.yml: S from labels, D from frames -1 and +1
    # (the photometric loss; the pose network at LR 1e-6), 512x1024 with a random 512x512 crop and flips, Adam
    # (0.9, 0.999), LR 5e-5 / backbone 1e-5, StepLR at 30k, 40k iterations, loss weights 1/1. Its starting
    # point, a Monodepth2 network of its own pre-trained on Cityscapes sequences, is not public: ImageNet here.
    profiles["paper-cityscapes-sde"] = ExperimentConfig(
        profile="paper-cityscapes-sde",
        data=DataConfig(dataset="cityscapes", size=(512, 1024), crop=(512, 512), classes=16, hflip=True,
                        num_workers=4, sequence=True),
        model=dataclasses.replace(paper_model, tasks="SD", depth_output="disparity", pose_weights="imagenet"),
        optim=OptimConfig(lr=5e-5, backbone_lr=1e-5, pose_lr=1e-6, betas=(0.9, 0.999), scheduler_step=30000),
        train=dataclasses.replace(paper_train, depth_loss="photometric"),
    )
    # The official configs/da/* and training/da_train.py: S+D only, 90k iterations, constant LR
    # 2.5e-4 / 1.5e-5, no clipping, weights 50/1 (the SD default), the whole source set, Cityscapes at
    # 512x1024.
    adaptation = {"synthia": ((512, 1024), None, 16), "vkitti2": ((512, 1696), (512, 1024), 8)}
    for source, (size, crop, classes) in adaptation.items():
        name = f"paper-{source}2cityscapes"
        profiles[name] = ExperimentConfig(
            profile=name,
            data=DataConfig(dataset=source, size=size, crop=crop, classes=classes, hflip=True,
                            num_workers=4, target_dataset="cityscapes", target_size=(512, 1024),
                            train_split="all"),
            model=dataclasses.replace(paper_model, tasks="SD"),
            optim=OptimConfig(lr=2.5e-4, backbone_lr=1.5e-5, clip_grad_norm=None),
            train=dataclasses.replace(paper_train, steps=90000),
            adapt=AdaptConfig(method="adversarial"),
        )
    return profiles


#: The named profiles (frozen; `get_profile` applies overrides).
PROFILES: dict[str, ExperimentConfig] = _profiles()


def get_profile(name: str, /, **overrides: Any) -> ExperimentConfig:
    """A named profile with keyword overrides.

    A keyword is either a section (`train={"steps": 10}`) or a field name that belongs to one
    section (`steps=10`, `tasks="SD"`); `name`, found in model and optim, must go through its section.
    """
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    config = PROFILES[name]
    return merge(config, _keyword_overrides(overrides)) if overrides else config


def load_config(path: str | Path, base: str = "quick") -> ExperimentConfig:
    """A YAML (or JSON) experiment file: a `profile:` to start from (else `base`), then sections to change."""
    source = Path(path)
    try:
        values = yaml.safe_load(source.read_text())
    except OSError as error:
        raise ConfigError(f"config file {source} cannot be read ({error.strerror}); check the path") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {source} is not valid YAML: {str(error).splitlines()[0]}") from None
    _check(isinstance(values, dict),
           f"config file {source} must hold a mapping such as 'train: {{steps: 10}}'")
    base = values.get("profile", base)
    try:
        return merge(ExperimentConfig() if base == "custom" else get_profile(base), values)
    except ConfigError as error:
        raise ConfigError(f"config file {source}: {error}") from None


def config_differences(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    differences = []
    for section in _SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        differences += [f"{section}.{key}" for key in get_type_hints(type(before))
                        if getattr(before, key) != getattr(after, key)]
    return differences
