"""Figures and findings of a study's summary (`densemtl_lab.study`): per-seed delta_m, paired differences.

All read the summary record (summary.json's content), so a lesson can draw a shipped study and a
learner's own one the same way, and print what the study found from the record (`study_findings`),
never from prose typed beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from densemtl_lab.atomic import atomic_path
from densemtl_lab.metrics import nest_metrics
from densemtl_lab.tasks import TASKS


def seed_points_figure(record: Mapping[str, Any], yours: Mapping[str, float] | None = None,
                       yours_label: str = "your run") -> Figure:
    """delta_m of every seed as a point per variant, with the mean as a bar (a variant without delta_m is left out).

    `yours` ({variant: delta_m}) adds a learner's own runs as stars beside the study's seeds.
    """
    labels = [label for label in record["variants"] if record["variants"][label].get("delta_m", {}).get("n")]
    figure = Figure(figsize=(1.3 * max(len(labels), 3) + 1.5, 3.4), layout="constrained")
    axes = figure.subplots()
    for position, label in enumerate(labels):
        values = [row["delta_m"] for row in record["per_seed"] if row["variant"] == label and row["delta_m"] is not None]
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        axes.scatter(position + jitter, values, s=22, color="tab:blue", zorder=3,
                     label=f"study seeds ({record['profile']})" if position == 0 else None)
        axes.hlines(np.mean(values), position - 0.3, position + 0.3, color="black", linewidth=2, zorder=2)
    mine = [(labels.index(label), value) for label, value in (yours or {}).items()
            if label in labels and value is not None]
    if mine:
        axes.scatter([position + 0.3 for position, _ in mine], [value for _, value in mine], marker="*", s=110,
                     color="tab:red", zorder=4, label=yours_label)
        axes.legend(fontsize=8, loc="best")
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xticks(range(len(labels)), labels, rotation=20)
    axes.set_ylabel("delta_m (%)")
    axes.set_title(f"study {record['study']} ({record['profile']}): delta_m per seed, vs {record['baseline']}")
    return figure


def paired_differences_figure(record: Mapping[str, Any], metric: str = "delta_m") -> Figure:
    """Each comparison a - b of `metric`: the per-seed differences and the 95% t-interval of their mean."""
    chosen = [item for item in record["comparisons"] if item["metric"] == metric and item["n"]]
    figure = Figure(figsize=(6.5, 0.55 * max(len(chosen), 2) + 1.3), layout="constrained")
    axes = figure.subplots()
    for row, item in enumerate(chosen):
        axes.scatter(item["differences"], [row] * len(item["differences"]), s=16, color="tab:grey", zorder=3)
        if item["interval95"]:
            low, high = item["interval95"]
            colour = "tab:green" if low > 0 else "tab:red" if high < 0 else "tab:orange"
            axes.plot([low, high], [row, row], color=colour, linewidth=3, zorder=2)
        axes.scatter([item["mean"]], [row], marker="D", color="black", zorder=4)
    axes.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_yticks(range(len(chosen)), [f"{item['a']} - {item['b']}" for item in chosen])
    axes.set_xlabel(f"paired difference of {metric} (same seed)")
    # on the figure, not the axes: the axes sit right of the long labels, and a title centred on them is cut off
    figure.suptitle(f"study {record['study']} ({record['profile']}): {metric}, a - b per seed (grey)\n"
                    "mean (diamond) and 95% t-interval over seeds")
    return figure


def save_study_figures(record: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write both figures as PNGs into `folder` (atomically); returns their paths."""
    paths = []
    for name, figure in (("delta_m_per_seed", seed_points_figure(record)),
                         ("paired_differences", paired_differences_figure(record))):
        path = folder / f"{name}.png"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=110)
        paths.append(path)
    return paths


def interval_verdict(interval: list[float] | None) -> str:
    """Where a 95% interval lies: "above zero", "below zero", "includes zero" or "one seed, no interval"."""
    if not interval:
        return "one seed, no interval"
    low, high = interval
    return "above zero" if low > 0 else "below zero" if high < 0 else "includes zero"


def study_means(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variant's mean over seeds as {variant: {task: {metric: mean}, "delta_m": mean}}, the shape
    `figures.metrics_table` draws (a metric without values is left out)."""
    return {label: nest_metrics({column: described["mean"] for column, described in columns.items()
                                 if column != "seeds" and described["n"]})
            for label, columns in record["variants"].items()}


def study_findings(record: Mapping[str, Any], metrics: Sequence[str] = ("delta_m",)) -> str:
    """What a study found, as text printed from its record: provenance, delta_m per variant, each paired
    difference of every metric in `metrics` (delta_m, or a column such as "semseg/mIoU") with its
    interval, and DenseMTL's attention diagnostics where recorded."""
    provenance = record["provenance"]
    hours = provenance.get("seconds", 0) / 3600
    seeds = sorted({row["seed"] for row in record["per_seed"]})
    lines = [f"Study {record['study']!r}, profile {record['profile']!r}: {record['runs']['complete']} of "
             f"{record['runs']['planned']} runs, seeds {seeds}, {record['steps']} steps each; "
             f"{provenance['date'][:10]}, commit {str(provenance['commit'])[:7]}, {provenance['machine']['cpu']}, "
             f"{hours:.1f} h of training.",
             f"delta_m (%) against {record['baseline']}, mean ± sd over seeds:"]
    for label, values in record["variants"].items():
        described = values.get("delta_m", {})
        if described.get("n"):
            spread = f" ± {described['std']:.2f}" if described["std"] is not None else ""
            lines.append(f"  {label:<18} {described['mean']:+7.2f}{spread}  (n={described['n']})")
    for metric in metrics:
        lines.append(f"Paired differences of {metric} (a - b, same seed), mean and 95% t-interval:")
        for item in record["comparisons"]:
            if item["metric"] == metric and item["n"]:
                interval = item["interval95"]
                shown = f"[{interval[0]:+.2f}, {interval[1]:+.2f}]" if interval else "-"
                lines.append(f"  {item['a'] + ' - ' + item['b']:<28} {item['mean']:+7.2f}  {shown:<18} "
                             f"{interval_verdict(interval)} (n={item['n']})")
    return "\n".join([*lines, attention_findings(record)]).rstrip("\n")


def attention_findings(record: Mapping[str, Any]) -> str:
    """The study's attention diagnostics of its DenseMTL runs as text ("" when it has none)."""
    lines = []
    for label, diagnostics in record.get("diagnostics", {}).items():
        lines.extend(_attention_findings(label, diagnostics))
    return "\n".join(lines)


def _attention_findings(label: str, diagnostics: Mapping[str, Any]) -> list[str]:
    lines = [f"{label}: attention over seeds {diagnostics['seeds']} (mean ± sd)"]
    for key, meaning in (("mean_alpha", "mean |alpha| (0 = branch closed)"),
                         ("mean_entropy", "mean attention entropy (1 = uniform)")):
        described = diagnostics[key]
        if described["n"]:
            spread = f" ± {described['std']:.3f}" if described["std"] is not None else ""
            lines.append(f"  {meaning:<40} {described['mean']:.3f}{spread}")
    for switch, tasks in diagnostics["main_metric_change"].items():
        parts = []
        for task, change in tasks.items():  # in the metric's units, then in % of the full model's value
            if change["change"]["n"]:
                relative = f" ({change['percent']['mean']:+.1f} %)" if change["percent"]["n"] else ""
                parts.append(f"{task} {TASKS[task].main_metric} {change['change']['mean']:+.2f}{relative}")
        lines.append(f"  switched off at test time, {switch[3:]:<15} {', '.join(parts)}")
    return lines


#: The course profile's goals for attention that is learnt and used (issue "Evidence the course can stand on",
#: docs/benchmarks.md, "The course studies"): the branch opened, its rows peaked, and the network using it.
ALPHA_GOAL = 0.1
ENTROPY_GOAL = 0.85
#: Switching the correlation branch off at test time costs at least this: mIoU points, or % of a lower-is-better
#: main metric (depth RMSE, normals angle).
SWITCH_OFF_GOALS = {"points": 1.0, "percent": 2.0}


def attention_goals(record: Mapping[str, Any], variant: str = "densemtl") -> str:
    """Whether the study's `variant` meets each attention goal, as text: the value over seeds, then met or not
    (a variant without alpha, or without a correlation branch, has nothing to measure there)."""
    diagnostics = record.get("diagnostics", {}).get(variant)
    if diagnostics is None:
        return f"{variant}: the study has no attention diagnostics"
    alpha, entropy = diagnostics["mean_alpha"]["mean"], diagnostics["mean_entropy"]["mean"]
    costs = {task: change for task, change in diagnostics["main_metric_change"].get("no correlation", {}).items()
             if change["change"]["n"]}
    used = {task: cost for task, change in costs.items() if (cost := _switch_off_cost(task, change)) is not None}
    rows = [
        (f"mean |alpha| >= {ALPHA_GOAL} (the branch opened)", _number(alpha),
         None if alpha is None else alpha >= ALPHA_GOAL),
        (f"mean entropy <= {ENTROPY_GOAL} (peaked attention)", _number(entropy),
         None if entropy is None else entropy <= ENTROPY_GOAL),
        (f"correlation off costs >= {SWITCH_OFF_GOALS['points']:g} mIoU point or >= {SWITCH_OFF_GOALS['percent']:g} %",
         ", ".join(f"{task} {cost}" for task, cost in used.items()) or "no task", bool(used)),
    ]
    lines = [f"{variant}: the course goals for attention that is learnt and used (mean over seeds {diagnostics['seeds']})"]
    verdicts = {True: "met", False: "NOT met", None: "(not measured)"}
    lines += [f"  {goal:<58} {value:<24} {verdicts[met]}" for goal, value, met in rows]
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _switch_off_cost(task: str, change: Mapping[str, Any]) -> str | None:
    """What switching the branch off cost `task` when it reaches a goal's amount (None otherwise)."""
    if TASKS[task].direction(TASKS[task].main_metric) > 0:  # higher is better (mIoU): points lost
        lost = -change["change"]["mean"]
        return f"-{lost:.2f} points" if lost >= SWITCH_OFF_GOALS["points"] else None
    percent = change["percent"]["mean"] if change["percent"]["n"] else None
    return f"+{percent:.1f} %" if percent is not None and percent >= SWITCH_OFF_GOALS["percent"] else None
