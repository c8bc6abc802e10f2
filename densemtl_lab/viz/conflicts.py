"""Figures of gradient conflicts (notebook 08): task gradients, what aggregators make of them, cosines over training.

An aggregator (torchjd's MGDA, PCGrad, UPGrad, ...) turns the Jacobian J of the shared parameters
(one row per task gradient, `densemtl_lab.conflicts.task_gradients`) into one update direction. Every
direction these methods return is a combination of the rows of J, so it lies in their span: with
T tasks that span has (at most) T dimensions, and drawing J's rows and the directions in an
orthonormal basis of it (2-D for two tasks, 3-D for three) shows them exactly, however many
parameters the network has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from densemtl_lab.viz.figures import FigureInputError, smooth

#: The aggregators the lesson compares (torchjd.aggregation class names), in drawing order.
LESSON_AGGREGATORS = ("Mean", "MGDA", "PCGrad", "UPGrad")
_COLOURS = {"Mean": "black", "MGDA": "tab:purple", "PCGrad": "tab:orange", "UPGrad": "tab:green"}
#: The task gradients' colours, in row order (apart from the aggregators').
_GRADIENT_COLOURS = ("tab:red", "tab:blue", "tab:brown", "tab:pink")


def aggregated_directions(jacobian: torch.Tensor, names: Sequence[str] = LESSON_AGGREGATORS
                          ) -> dict[str, torch.Tensor]:
    """{aggregator: the direction torchjd's aggregator of that name makes of `jacobian` [T, P]}."""
    import torchjd.aggregation

    return {name: getattr(torchjd.aggregation, name)()(jacobian.double()).float() for name in names}


def span_coordinates(jacobian: torch.Tensor, vectors: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows of `jacobian` [T, P] and each of `vectors` [P] in an orthonormal basis of the rows' span.

    The basis is Gram-Schmidt on the rows in order: the first axis is the first task's gradient, the
    second the part of the second task's gradient orthogonal to it, and so on. Returns ([T, T]
    coordinates of the rows, {name: [T] coordinates}); a vector outside the span raises.
    """
    rows = jacobian.double()
    basis, _ = torch.linalg.qr(rows.T)  # P x T, columns orthonormal, spanning the rows in order
    signs = torch.sign(torch.diagonal(basis.T @ rows.T))  # QR may flip an axis: keep each row's own axis positive
    basis = basis * torch.where(signs == 0, 1.0, signs)
    coordinates = {}
    for name, vector in vectors.items():
        projected = basis.T @ vector.double()
        if torch.linalg.norm(basis @ projected - vector.double()) > 1e-4 * max(float(torch.linalg.norm(vector)), 1e-12):
            raise FigureInputError(f"{name} does not lie in the span of the task gradients; it cannot be drawn there")
        coordinates[name] = projected.numpy()
    return (basis.T @ rows.T).T.numpy(), coordinates


def directions_figure(jacobian: torch.Tensor, tasks: Sequence[str], directions: Mapping[str, torch.Tensor], *,
                      title: str) -> Figure:
    """The task gradients and each aggregator's direction as arrows, exactly, in the span of
    the gradients: a plane for two tasks, a 3-D view for three. Lengths are to scale."""
    if jacobian.shape[0] not in (2, 3) or jacobian.shape[0] != len(tasks):
        raise FigureInputError(f"draws 2 or 3 task gradients with one name each; got a {list(jacobian.shape)} "
                               f"Jacobian and tasks {list(tasks)}")
    rows, coordinates = span_coordinates(jacobian, directions)
    three = jacobian.shape[0] == 3
    figure = Figure(figsize=(6.4, 5.2) if three else (6.2, 4.6), layout="constrained")
    axes = figure.add_subplot(projection="3d" if three else None)
    arrows = [(row, f"g {task}", colour) for row, task, colour in zip(rows, tasks, _GRADIENT_COLOURS)]
    arrows += [(coordinates[name], name, _COLOURS.get(name, "tab:blue")) for name in directions]
    for vector, label, colour in arrows:
        if three:
            axes.quiver(0, 0, 0, *vector, color=colour, linewidth=2, arrow_length_ratio=0.08, label=label)
        else:
            axes.annotate("", xy=tuple(vector), xytext=(0, 0),
                          arrowprops={"arrowstyle": "-|>", "color": colour, "linewidth": 2})
            axes.plot([], [], color=colour, linewidth=2, label=label)  # the legend's entry
        axes.text(*vector, f" {label}", color=colour, fontsize=8)
    extent = 1.15 * max(float(np.abs(np.vstack([rows, *coordinates.values()])).max()), 1e-12)
    for setter in (axes.set_xlim, axes.set_ylim, *([axes.set_zlim] if three else [])):
        setter(-extent, extent)
    if not three:
        axes.set_aspect("equal")
        axes.axhline(0, color="lightgrey", linewidth=0.8)
        axes.axvline(0, color="lightgrey", linewidth=0.8)
    names = ("axis 1", "axis 2", "axis 3")
    axes.set_xlabel(f"{names[0]}: along g {tasks[0]}")
    axes.set_ylabel(f"{names[1]}: g {tasks[1]}'s part orthogonal to it")
    if three:
        axes.set_zlabel(f"{names[2]}: the rest of g {tasks[2]}")
    axes.legend(fontsize=7, loc="upper left")
    axes.set_title(title, fontsize=10)
    return figure


def alignment_table(jacobian: torch.Tensor, tasks: Sequence[str], directions: Mapping[str, torch.Tensor]
                    ) -> dict[str, dict[str, float]]:
    """{aggregator: {task: cosine of its direction with the task's gradient}, plus "norm": its length}.

    A positive cosine means a small step along the direction lowers that task's loss (to first order).
    """
    table = {}
    for name, direction in directions.items():
        row = {task: float(torch.nn.functional.cosine_similarity(direction.double(), gradient.double(), dim=0))
               for task, gradient in zip(tasks, jacobian)}
        row["norm"] = float(direction.norm())
        table[name] = row
    return table


def cosine_history_figure(steps: Sequence[Mapping[str, Any]], *, title: str, smoothing: float = 0.6) -> Figure:
    """Left: each pair's gradient cosine over the measured steps (smoothed, raw values faint). Right: the
    matrix of the mean cosines over training. `steps` are a history's step rows (`train.conflict_every`)."""
    measured = [row for row in steps if any(key.startswith("grad_cosine/") for key in row)]
    if not measured:
        raise FigureInputError("no step row holds grad_cosine/... values; train with train.conflict_every=N")
    pairs = [key.removeprefix("grad_cosine/") for key in measured[0] if key.startswith("grad_cosine/")]
    tasks = list(dict.fromkeys(task for pair in pairs for task in pair.split("~")))
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    curves, matrix_axes = figure.subplots(1, 2, width_ratios=(2.2, 1))
    x = [row["step"] for row in measured]
    for pair in pairs:
        values = [row[f"grad_cosine/{pair}"] for row in measured]
        line, = curves.plot(x, smooth(values, smoothing), linewidth=2, label=pair.replace("~", " / "))
        curves.plot(x, values, color=line.get_color(), alpha=0.25, linewidth=1)
    curves.axhline(0, color="grey", linewidth=0.8, linestyle="--")
    curves.set(xlabel="training step", ylabel="cosine of the task gradients", ylim=(-1.05, 1.05),
               title="pairwise gradient cosine on the encoder")
    curves.legend(fontsize=8)
    mean = np.eye(len(tasks))
    for a, b in combinations(range(len(tasks)), 2):
        key = f"grad_cosine/{tasks[a]}~{tasks[b]}"
        mean[a, b] = mean[b, a] = np.nanmean([row[key] for row in measured])
    shown = matrix_axes.imshow(mean, cmap="RdBu", vmin=-1, vmax=1)
    for (i, j), value in np.ndenumerate(mean):
        matrix_axes.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=9,
                         color="white" if abs(value) > 0.6 else "black")
    matrix_axes.set_xticks(range(len(tasks)), tasks)
    matrix_axes.set_yticks(range(len(tasks)), tasks)
    matrix_axes.set_title("mean over training")
    figure.colorbar(shown, ax=matrix_axes, shrink=0.8)
    figure.suptitle(title)
    return figure


def step_cost_figure(costs: Mapping[str, Any], *, title: str, reference: str = "none") -> Figure:
    """Median seconds per training step of each setting (`densemtl_lab.step_cost.aggregator_costs`), as bars
    labelled with their multiple of `reference`'s (the weighted sum's backward); each timed step as a dot."""
    if reference not in costs:
        raise FigureInputError(f"no {reference!r} among the costs ({', '.join(costs)}); time it too")
    names = list(costs)
    figure = Figure(figsize=(1.4 * len(names) + 2.5, 3.4), layout="constrained")
    axes = figure.subplots()
    bars = axes.bar(range(len(names)), [costs[name].wall_s for name in names], color="tab:blue", alpha=0.7)
    for index, name in enumerate(names):
        walls = costs[name].step_walls
        axes.plot([index] * len(walls), walls, "o", color="black", markersize=3)
    labels = [f"x{costs[name].wall_s / costs[reference].wall_s:.2f}" for name in names]
    axes.bar_label(bars, labels, padding=3)
    axes.set_xticks(range(len(names)), ["weighted sum" if name == reference else name for name in names])
    axes.set(ylabel="seconds per training step (median)", title=title)
    axes.margins(y=0.15)
    return figure
