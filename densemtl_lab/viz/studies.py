"""Figures of a study's summary (`densemtl_lab.study`): per-seed delta_m, and paired differences.

Both read the summary record (summary.json's content), so a lesson can draw a shipped study and a
learner's own one the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from densemtl_lab.atomic import atomic_path


def seed_points_figure(record: Mapping[str, Any]) -> Figure:
    """delta_m of every seed as a point per variant, with the mean as a bar (a variant without delta_m is left out)."""
    labels = [label for label in record["variants"] if record["variants"][label].get("delta_m", {}).get("n")]
    figure, axes = plt.subplots(figsize=(1.3 * max(len(labels), 3) + 1.5, 3.4))
    for position, label in enumerate(labels):
        values = [row["delta_m"] for row in record["per_seed"] if row["variant"] == label and row["delta_m"] is not None]
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        axes.scatter(position + jitter, values, s=22, color="tab:blue", zorder=3)
        axes.hlines(np.mean(values), position - 0.3, position + 0.3, color="black", linewidth=2, zorder=2)
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xticks(range(len(labels)), labels, rotation=20)
    axes.set_ylabel("delta_m (%)")
    axes.set_title(f"study {record['study']} ({record['profile']}): delta_m per seed, vs {record['baseline']}")
    figure.tight_layout()
    return figure


def paired_differences_figure(record: Mapping[str, Any], metric: str = "delta_m") -> Figure:
    """Each comparison a - b of `metric`: the per-seed differences and the 95% t-interval of their mean."""
    chosen = [item for item in record["comparisons"] if item["metric"] == metric and item["n"]]
    figure, axes = plt.subplots(figsize=(6.5, 0.55 * max(len(chosen), 2) + 1.3))
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
    axes.set_title(f"study {record['study']}: mean (diamond) and 95% t-interval over seeds")
    figure.tight_layout()
    return figure


def save_study_figures(record: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write both figures as PNGs into `folder` (atomically); returns their paths."""
    paths = []
    for name, figure in (("delta_m_per_seed", seed_points_figure(record)),
                         ("paired_differences", paired_differences_figure(record))):
        path = folder / f"{name}.png"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths
