"""The results table and interactive loss curves of notebooks 04 and 07 (delta_m: docs/faithfulness.md).

A results row summarises one model on one task set over one or more seeds:

    {"model": "densemtl", "tasks": "SDN", "semseg/mIoU": 41.2, "depth/rmse": 6.1,
     "normals/mean_angle": 21.4, "delta_m": 2.3, "seeds": [0, 1, 2], "params_M": 14.2}

Each task's main metric is the mean over seeds; delta_m = (100/T) sum_t s_t (M_t - B_t) / B_t
(`metrics.delta_m`) is computed per seed against that seed's single-task baselines, then averaged
(and its standard deviation across seeds added as "delta_m_std" when there are several); it is None
when a baseline is 0, which only a barely trained run (the smoke profile's 4 steps) gives. This is
the row format of the key `results_table` in a notebook's metrics.json, which the batch report
renders (`densemtl_lab.report`). `loss_curves` draws every run's training losses in one plotly
figure with a menu for the loss (total or one task's unweighted loss).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from densemtl_lab.metrics import delta_m, nest_metrics
from densemtl_lab.tasks import TASKS, parse_tasks, task_letters
from densemtl_lab.viz.figures import smooth

#: Profiles whose results are averaged over three seeds (the others are quick looks with one).
MULTI_SEED_PROFILES = ("full",)
MULTI_SEED_COUNT = 3

MetricsBySeed = Mapping[int, Mapping[str, Mapping[str, float]]]


class ResultsError(ValueError):
    """Results that cannot be summarised (no seeds, a missing task or baseline)."""


def profile_seeds(profile: str, seed: int = 0) -> list[int]:
    """The seeds a results table averages: three from `seed` in `full` and `paper-*`, else `[seed]`."""
    several = profile in MULTI_SEED_PROFILES or profile.startswith("paper-")
    return [seed + offset for offset in range(MULTI_SEED_COUNT)] if several else [seed]


def parameter_count(*models: nn.Module) -> int:
    """Trainable parameters of one or more networks (the STL row counts one network per task)."""
    return sum(p.numel() for model in models for p in model.parameters() if p.requires_grad)


def main_metric_key(task: str) -> str:
    """The results-table column of a task, e.g. "semseg/mIoU"."""
    return f"{task}/{TASKS[task].main_metric}"


def results_row(model: str, tasks: str | Sequence[str], metrics: MetricsBySeed,
                baselines: Mapping[int, Mapping[str, float]], params: int) -> dict[str, Any]:
    """One row of the results table: seed means of the main metrics, delta_m, seeds and size.

    `metrics[seed]` is {task: {metric: value}} of the model trained with that seed; `baselines[seed]`
    the single-task baselines of the same seed ({task: main metric}); `params` its parameter count.
    """
    names = parse_tasks(tasks)
    seeds = sorted(metrics)
    if not seeds:
        raise ResultsError(f"no runs of model {model!r}; train at least one seed")
    missing = [seed for seed in seeds if seed not in baselines]
    if missing:
        raise ResultsError(f"no single-task baselines for seed(s) {missing} of model {model!r}; "
                           f"train the STL models of those seeds (notebook 02) first")
    row: dict[str, Any] = {"model": model, "tasks": task_letters(names)}
    for task in names:
        values = [metrics[seed].get(task, {}).get(TASKS[task].main_metric) for seed in seeds]
        if None in values:
            raise ResultsError(f"model {model!r} has no {main_metric_key(task)} for every seed {seeds}; "
                               f"evaluate it on {task!r}")
        row[main_metric_key(task)] = statistics.fmean(values)
    if any(baselines[seed][task] == 0 for seed in seeds for task in names):
        row["delta_m"] = None  # a baseline of 0 (an untrained smoke run): no relative change exists
    else:
        deltas = [delta_m(metrics[seed], baselines[seed], names) for seed in seeds]
        row["delta_m"] = statistics.fmean(deltas)
        if len(seeds) > 1:
            row["delta_m_std"] = statistics.stdev(deltas)
    row["seeds"] = seeds
    row["params_M"] = round(params / 1e6, 3)
    return row


def nested(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows -> {model: {task: {metric: value}, "delta_m": value}}, the input of figures.metrics_table."""
    return {row["model"]: nest_metrics(row) for row in rows}


def loss_curves(histories: Mapping[str, Any], keys: Sequence[str] | None = None, smoothing: float = 0.8,
                title: str = "Training losses"):
    """A plotly figure of each run's training losses (smoothed), with a menu to pick the loss.

    `histories` maps a run label to its `train.History` (or its dict). `keys` are history columns
    ("loss", "loss/semseg", ...); by default the total and every per-task loss present. The total is
    the weighted sum the optimiser saw, so it only compares runs with the same weights, and is drawn for
    multi-task runs only (a single-task run's total is its one task loss, shown in that task's view);
    the per-task losses are unweighted and compare across all runs that predict the task.
    """
    import plotly.graph_objects as go

    runs = {label: list(getattr(history, "steps", None) or history["steps"]) for label, history in histories.items()}
    if not runs:
        raise ResultsError("histories is empty; pass {run label: History}")
    present = {key for rows in runs.values() for row in rows for key in row}
    keys = list(keys) if keys else ["loss", *(f"loss/{t}" for t in TASKS if f"loss/{t}" in present)]
    absent = [key for key in keys if key not in present]
    if absent:
        raise ResultsError(f"no run has column(s) {absent}; known: {', '.join(sorted(present))}")
    figure = go.Figure()
    owners = []  # the key of every trace, in order
    task_count = {label: len({k for row in rows for k in row if k.startswith("loss/")}) for label, rows in runs.items()}
    for key in keys:
        for label, rows in runs.items():
            points = [(row["step"], row[key]) for row in rows if key in row]
            if not points or (key == "loss" and task_count[label] < 2):
                continue
            steps, values = zip(*points)
            figure.add_trace(go.Scatter(x=steps, y=smooth(values, smoothing), mode="lines", name=label,
                                        legendgroup=label, visible=key == keys[0],
                                        hovertemplate=f"{label}<br>step %{{x}}<br>{key} %{{y:.4g}}<extra></extra>"))
            owners.append(key)
    menu = [{"label": key, "method": "update",
             "args": [{"visible": [owner == key for owner in owners]}, {"yaxis.title.text": key}]}
            for key in keys]
    figure.update_layout(title=title, xaxis_title="step", yaxis_title=keys[0], yaxis_type="log",
                         updatemenus=[{"buttons": menu, "x": 1.0, "xanchor": "right", "y": 1.15}],
                         legend_title_text="run", height=420, margin={"t": 80})
    return figure


__all__ = ["ResultsError", "loss_curves", "main_metric_key", "nested", "parameter_count", "profile_seeds",
           "results_row"]
