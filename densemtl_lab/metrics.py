"""Streaming multi-task metrics and delta_m against stored single-task baselines (docs/faithfulness.md, "Metrics").

Each task's metrics are its own streaming meter (`Task.meter` in densemtl_lab.tasks; the shared
machinery is `densemtl_lab.tasks.meter`): sufficient statistics, never averages of batch averages, so
`compute()` gives the same value however the set is split into batches, and two meters (or ranks:
all-reduce `state_tensors()` with SUM) merge exactly. Predictions are the raw scale-0 head outputs;
they are resized to the label size like the losses. Rates are in percent (mIoU, pixel_acc, delta1-3,
within_*, f1, mean_f1, ods_f); depth is in metres, angles in degrees. Each task module states its
standard definitions and what `reference_quirks=True` changes to reproduce the reference code's
metrics (its `metrics/*.py` and the `loss/*.py` that feed them; docs/faithfulness.md, "The reference's
quirks").
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from densemtl_lab.atomic import write_json_atomic
from densemtl_lab.tasks import TASKS, LabelError, PredictionError, get_task, parse_tasks
from densemtl_lab.tasks.meter import Meter, MetricOptions, NonFinitePredictionError

__all__ = [
    "BASELINES_FILE", "BASELINES_VERSION", "Baselines", "BaselinesFileError", "Meter", "MetricOptions",
    "MissingBaselineError", "MultiTaskMetrics", "NonFinitePredictionError", "delta_m", "delta_m_per_task",
    "flatten_metrics", "load_baselines", "nest_metrics", "save_baseline",
]

#: The versioned single-task baselines file shipped with the package.
BASELINES_FILE = Path(__file__).parent / "resources" / "baselines.json"
BASELINES_VERSION = 1
_PROVENANCE_KEYS = ("seeds", "commit", "config")


class MissingBaselineError(ValueError):
    """delta_m needs a single-task baseline that the baselines file does not hold."""


class BaselinesFileError(ValueError):
    """The baselines file is missing, unreadable, of another version, or lacks a setting."""


class MultiTaskMetrics:
    """One meter per task. `update(outputs, batch)` with outputs = {task: raw scale-0 tensor}.

    The settings reach every task's meter (`MetricOptions`), which takes those it needs: semseg the
    classes, edges `ods_tolerance` (None: its default), normals `dataset` (for a reference quirk).
    """

    def __init__(
        self,
        tasks: str | Iterable[str],
        num_classes: int,
        class_ids: Iterable[int] | None = None,
        reference_quirks: bool = False,
        ods_tolerance: float | None = None,
        dataset: str | None = None,
        median_scaling: bool = False,
    ) -> None:
        self.tasks = parse_tasks(tasks)
        options = MetricOptions(
            num_classes, None if class_ids is None else tuple(class_ids), reference_quirks, ods_tolerance, dataset,
            median_scaling,
        )
        self.meters: dict[str, Meter] = {task: get_task(task).meter(options) for task in self.tasks}

    def update(
        self, outputs: Mapping[str, torch.Tensor | Mapping[int, torch.Tensor]],
        batch: Mapping[str, Any],
    ) -> None:
        """Accumulate one batch. A {scale: tensor} entry (a model's full output) is read at scale 0."""
        for task, meter in self.meters.items():
            if task not in outputs:
                raise PredictionError(
                    f"outputs has no {task!r} prediction; metrics were built for {self.tasks}"
                )
            key = TASKS[task].label_key
            if key not in batch:
                raise LabelError(f"batch has no label {key!r}; drop {task!r} from the metric tasks")
            pred = outputs[task]
            meter.update(pred[0] if isinstance(pred, Mapping) else pred, batch[key])

    def compute(self) -> dict[str, dict[str, float]]:
        """{task: {metric: value}} over everything seen since the last reset."""
        return {task: meter.compute() for task, meter in self.meters.items()}

    def reset(self) -> None:
        for meter in self.meters.values():
            meter.reset()

    def merge(self, other: MultiTaskMetrics) -> None:
        """Add the statistics of another MultiTaskMetrics with the same tasks and settings."""
        if other.tasks != self.tasks:
            raise ValueError(f"cannot merge metrics of tasks {other.tasks} into {self.tasks}")
        for task, meter in self.meters.items():
            meter.merge(other.meters[task])

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """{'task/stat': live tensor}; all-reduce each with SUM to merge ranks."""
        return {
            f"{task}/{key}": value
            for task, meter in self.meters.items()
            for key, value in meter.state_tensors().items()
        }


# --- delta_m and the baselines file --------------------------------------------------------------

class Baselines(dict):
    """Task -> the single-task baseline of its main metric, remembering where it came from."""

    def __init__(self, values: Mapping[str, float], source: str) -> None:
        super().__init__(values)
        self.source = source


def _read_baselines_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BaselinesFileError(
            f"baselines file {path} does not exist; train the single-task models (notebook 02) "
            f"and store them with save_baseline"
        ) from None
    except json.JSONDecodeError as error:
        raise BaselinesFileError(
            f"baselines file {path} is not valid JSON ({error}); restore it from git"
        ) from None
    if not isinstance(data, dict) or data.get("version") != BASELINES_VERSION:
        raise BaselinesFileError(
            f"baselines file {path} has version {data.get('version') if isinstance(data, dict) else None!r}, "
            f"this code reads version {BASELINES_VERSION}; regenerate it with save_baseline"
        )
    return data


def load_baselines(path: str | os.PathLike, setting: str) -> Baselines:
    """The baselines {task: main-metric value} stored for `setting` (e.g. "toy-quick-SDNE")."""
    path = Path(path)
    settings = _read_baselines_file(path).get("settings", {})
    if setting not in settings:
        known = ", ".join(sorted(settings)) or "none yet"
        raise BaselinesFileError(
            f"baselines file {path} has no setting {setting!r} (known: {known}); train the "
            f"single-task models for it (notebook 02) and store them with save_baseline"
        )
    values = {}
    for task, entry in settings[setting].items():
        main = TASKS[task].main_metric
        if entry.get("metric") != main:
            raise BaselinesFileError(
                f"baseline {setting!r}/{task!r} in {path} is for metric {entry.get('metric')!r}, but "
                f"the task's main metric is {main!r}; retrain and save the baseline"
            )
        values[task] = float(entry["value"])
    return Baselines(values, source=f"setting {setting!r} of {path}")


def save_baseline(
    path: str | os.PathLike,
    setting: str,
    task: str,
    metrics: Mapping[str, float],
    provenance: Mapping[str, Any],
) -> None:
    """Store `task`'s main metric (from its `metrics` dict) under `setting`, atomically.

    `provenance` must give `seeds` (list of ints), `commit` (str) and `config` (str or dict). The file is
    created (version BASELINES_VERSION) when missing; other entries are kept.
    """
    path = Path(path)
    (task,) = parse_tasks([task])
    main = TASKS[task].main_metric
    if main not in metrics or not math.isfinite(float(metrics[main])):
        raise ValueError(
            f"metrics for {task!r} must hold a finite {main!r} (its main metric), got {dict(metrics)}"
        )
    missing = [key for key in _PROVENANCE_KEYS if key not in provenance]
    if missing:
        raise ValueError(f"provenance lacks {missing}; give seeds, commit and config for the baseline")
    data = _read_baselines_file(path) if path.exists() else {"version": BASELINES_VERSION, "settings": {}}
    entry = {"metric": main, "value": float(metrics[main])}
    entry.update({key: provenance[key] for key in _PROVENANCE_KEYS})
    data.setdefault("settings", {}).setdefault(setting, {})[task] = entry
    write_json_atomic(path, data)


def delta_m_per_task(
    results: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, float],
    tasks: str | Iterable[str] | None = None,
) -> dict[str, float]:
    """100 * s_t (M_t - B_t) / B_t per task on its main metric, s_t = +1 if higher is better else -1."""
    source = getattr(baselines, "source", "the baselines passed in")
    deltas = {}
    chosen = [key for key in results if key in TASKS] if tasks is None else tasks  # skips e.g. "delta_m"
    for task in parse_tasks(chosen):
        spec = TASKS[task]
        if task not in baselines:
            raise MissingBaselineError(
                f"no single-task baseline for task {task!r} in {source}; train it (notebook 02) and "
                f"store it with save_baseline"
            )
        if task not in results or spec.main_metric not in results[task]:
            raise KeyError(f"results lack {task!r}/{spec.main_metric!r}; evaluate the model on {task!r}")
        base = float(baselines[task])
        if base == 0:
            raise ValueError(f"baseline of {task!r} in {source} is 0; delta_m divides by it")
        value = float(results[task][spec.main_metric])
        deltas[task] = 100.0 * spec.direction(spec.main_metric) * (value - base) / base
    return deltas


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, float],
    tasks: str | Iterable[str] | None = None,
) -> float:
    """Delta_m = (100 / T) sum_t s_t (M_t - B_t) / B_t (Maninis et al. 2019; reference metrics/mtl.py).

    Positive means the multi-task model beats the single-task baselines on average.
    """
    deltas = delta_m_per_task(results, baselines, tasks)
    return sum(deltas.values()) / len(deltas)


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluator's shape as one flat row: {task: {metric: v}, "delta_m": v} -> {"task/metric": v, "delta_m": v}.

    Tables, CSV files and histories hold this view; `nest_metrics` is its inverse.
    """
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}/{name}": float(v) for name, v in value.items()})
        else:
            flat[key] = float(value)
    return flat


def nest_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """A flat row back to the evaluator's shape: {"task/metric": v, "delta_m": v} -> {task: {metric: v}, "delta_m": v}.

    Keys of registered tasks are nested; "delta_m" stays when it has a value; anything else (a row's
    labels, seeds or sizes) is left out.
    """
    nested: dict[str, Any] = {}
    for key, value in row.items():
        task, _, metric = key.partition("/")
        if task in TASKS and metric:
            nested.setdefault(task, {})[metric] = value
        elif key == "delta_m" and value is not None:
            nested[key] = value
    return nested
