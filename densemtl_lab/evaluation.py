"""Evaluate a model on a dataset: `evaluate` returns {task: {metric: value}} (docs/faithfulness.md, "Metrics").

It needs the model, the dataset and how to run them (batch size, device, precision), never a training
configuration; `ExperimentConfig.evaluation_options()` gives a run's settings when there is one.
delta_m needs the single-task baselines, so the caller that owns them computes it (`metrics.delta_m`).

    from densemtl_lab.evaluation import evaluate
    metrics = evaluate(model, val_set, device="cpu")       # {"semseg": {"mIoU": ...}, "depth": {...}}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from densemtl_lab import distributed
from densemtl_lab.metrics import MultiTaskMetrics
from densemtl_lab.runtime import native_cpu_bf16, tune_cpu_allocator

Batch = dict[str, Any]


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device` (None: full precision).

    `auto` is bf16 on CUDA where supported, else fp16; bf16 on a CPU with native bf16 (AMX or
    AVX512-BF16: `runtime.native_cpu_bf16`); full precision elsewhere (other CPUs, MPS). Why bf16 on
    such CPUs: docs/benchmarks.md, "bf16 on the CPU".
    """
    if setting == "off":
        return None
    if setting == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and native_cpu_bf16() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def channels_last_on(device: torch.device, requested: bool | str) -> bool | str:
    """The `train.channels_last` setting (False, True or "decoders") that applies on `device`: `requested`
    on CPUs and CUDA GPUs, False elsewhere."""
    return requested if device.type in ("cpu", "cuda") else False


def to_device(batch: Batch, device: torch.device, channels_last: bool | str) -> Batch:
    """Tensors of a collated batch onto `device` (non-blocking from pinned memory); the images in channels_last
    when the whole model is (`channels_last=True`; with "decoders" the encoder reads NCHW)."""
    moved = {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
             for key, value in batch.items()}
    if channels_last is True:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 4, device: torch.device | str = "cpu",
             amp: str = "off", channels_last: bool | str = False, num_workers: int = 0, max_batches: int | None = None,
             reference_quirks: bool = False, dataset_name: str | None = None, median_scaling: bool = False,
             context: distributed.ProcessContext = distributed.ProcessContext()) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of the model's full-resolution outputs (scale 0) on `dataset`.

    The model runs in eval mode (its mode is restored after) on `device`, under autocast per `amp`
    (`autocast_dtype`), over at most `max_batches` batches (None: all). Metrics accumulate sufficient
    statistics, summed over the processes of a distributed run (`context`). `reference_quirks=True`
    computes them as the reference code does, for `dataset_name` (docs/faithfulness.md);
    `median_scaling=True` scales each depth prediction to its label's median first (self-supervised depth).
    """
    device = torch.device(device)
    if device.type == "cpu":
        tune_cpu_allocator()  # each batch allocates the same large buffers: keep them mapped (as the Trainer does)
    tasks = tuple(model.tasks)
    dtype = autocast_dtype(amp, device)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=distributed.ShardSampler(len(dataset), context),
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator())  # leaves the training's random state alone
    metrics = MultiTaskMetrics(tasks, model.num_classes, class_ids=getattr(dataset, "class_ids", None),
                               reference_quirks=reference_quirks, dataset=dataset_name,
                               median_scaling=median_scaling)
    was_training = model.training
    model.eval()
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        batch = to_device(batch, device, channels_last_on(device, channels_last))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            outputs = model(batch["image"])
        metrics.update({task: outputs[task][0].float() for task in tasks}, batch)
    model.train(was_training)
    distributed.all_reduce_sum(metrics.state_tensors().values(), context)
    return metrics.compute()
