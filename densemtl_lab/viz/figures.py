"""Matplotlib figures for the lessons: samples, predictions, learning curves, metric tables.

Every function returns a titled `matplotlib.figure.Figure` with labelled panels (save it with
`Lab.save_figure`). The signatures are stable; notebooks 01-07 and the explorers call them:

- `show_sample(sample, tasks=None, *, class_names=None, palette=None, title=None)`
  one data-contract sample: the image and each label present (semseg with a class legend, depth
  in metres with a colour bar, normals, edges).
- `show_samples(samples, tasks=None, *, class_names=None, palette=None, title="Samples")`
  the same, one row per sample (a static grid of scenes).
- `show_predictions(batch, outputs, tasks=None, *, max_images=2, class_names=None, palette=None,
  title=None)`
  a collated batch and the model's raw outputs (`{task: {scale: tensor}}` or `{task: tensor}`):
  per image a "label" row and a "prediction" row, one column per task.
- `plot_history(history, keys=None, *, title=..., smoothing=0.6, log_y=False)`
  learning curves of one `train.History` or of several (`{"run label": History}`), one panel per
  history column ("loss/semseg", "semseg/mIoU", "weight/depth", ...).
- `metrics_table(results, metrics=None, *, title=..., digits=2)`
  a table of runs x metrics (arrows give each metric's direction, the best value is bold).
- `class_frequencies(labels)` and `plot_class_frequencies(frequencies, class_names, palette)`
  pixel fractions per class over label maps, and their bar chart.
- `plot_task_deltas(deltas)` grouped bars of per-task % changes against the baselines ({run: {task: %}}).
- `class_legend(ax, class_ids, class_names, palette)` adds a legend of class colours to an axis.

Colours come from `densemtl_lab.viz.colour` (each task colours its own maps).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import FuncNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from densemtl_lab.data.classes import CITYSCAPES_CLASSES
from densemtl_lab.tasks import IGNORE_INDEX, TASKS, decode_prediction, parse_tasks
from densemtl_lab.viz.colour import colourise, default_palette

#: The width of one image panel (inches), shared by the figure modules.
PANEL_INCHES = 2.6
_DEPTH_TICKS_M = (0.5, 1, 2, 3, 5, 10, 20, 40, 80)


class FigureInputError(ValueError):
    """An input that a figure helper cannot draw (missing keys, wrong shapes, nothing to plot)."""


# --- pieces ----------------------------------------------------------------------------------------

def _numpy(value: Any) -> np.ndarray:
    return value.detach().float().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)


def image_to_rgb(image: Any) -> np.ndarray:
    """An image [3, H, W] in [0, 1] (tensor or array) -> H x W x 3 floats for imshow."""
    array = _numpy(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise FigureInputError(f"image must be [3, H, W], got shape {list(array.shape)}")
    return array.transpose(1, 2, 0).clip(0.0, 1.0)


def present_classes(labels: Any) -> list[int]:
    """The class ids present in a label map (ignore index excluded), sorted."""
    ids = np.unique(_numpy(labels).astype(np.int64))
    return [int(i) for i in ids if i >= 0 and i != IGNORE_INDEX]


def class_legend(ax: Axes, class_ids: Sequence[int], class_names: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None, **legend_options: Any) -> None:
    """Add a legend with one colour patch per class id to `ax` (beside it, on the right)."""
    names = class_names or CITYSCAPES_CLASSES
    colours = palette or default_palette(max([*class_ids, len(names) - 1]) + 1)
    handles = [Patch(facecolor=np.asarray(colours[i]) / 255.0, edgecolor="black", linewidth=0.3,
                     label=names[i] if i < len(names) else f"class {i}") for i in class_ids]
    options = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "fontsize": 7, "frameon": False,
               **legend_options}
    ax.legend(handles=handles, **options)


def depth_range(depth_m: Any) -> tuple[float, float]:
    """(near, far) in metres: the 2nd and 98th percentiles of the valid depths (as colour_depth)."""
    depth = _numpy(depth_m)
    valid = depth[np.isfinite(depth) & (depth > 0)]
    if valid.size == 0:
        return 1.0, 80.0
    near, far = np.percentile(valid, [2, 98])
    return float(near), float(max(far, near * 1.001))


def _draw_depth(figure: Figure, ax: Axes, depth_m: Any, limits: tuple[float, float]) -> None:
    """Depth in metres, magma linear in 1/z (near is bright, as colour.colour_depth), colour bar in m."""
    depth = _numpy(depth_m)
    depth = depth.reshape(depth.shape[-2:])
    inverse_depth = FuncNorm((lambda z: -1.0 / np.maximum(z, 1e-6), lambda v: -1.0 / np.minimum(v, -1e-6)),
                             vmin=limits[0], vmax=limits[1])
    cmap = colormaps["magma_r"].with_extremes(bad="black")
    shown = ax.imshow(np.ma.masked_less_equal(depth, 0.0), cmap=cmap, norm=inverse_depth,
                      interpolation="nearest")
    ticks = [tick for tick in _DEPTH_TICKS_M if limits[0] <= tick <= limits[1]] or list(limits)
    bar = figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, ticks=ticks, format="{x:g}")
    bar.set_label("metres", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def _draw_task(figure: Figure, ax: Axes, task: str, value: Any, palette: Sequence[Sequence[int]] | None,
               class_names: Sequence[str] | None, legend: bool, reference: Any = None) -> None:
    """One task map (label units) into `ax`, with its class legend or depth colour bar.

    The task's `figure_key` says what goes beside the map: "metres", a colour bar in metres on the
    range of `reference` (the label, so a prediction shares its colours) or else of `value`;
    "legend", a class legend; otherwise nothing.
    """
    key = TASKS[task].figure_key
    if key == "metres":
        _draw_depth(figure, ax, value, depth_range(value if reference is None else reference))
        return
    ax.imshow(colourise(task, value, palette), interpolation="nearest")
    if key == "legend" and legend:
        class_legend(ax, present_classes(value), class_names, palette)


def _clean(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _titled_grid(figure: Figure, axes: np.ndarray, tasks: Sequence[str], title: str) -> Figure:
    """Column headings (image, then one per task), no ticks, and the figure title."""
    for ax, heading in zip(axes[0], ["image", *(TASKS[t].title for t in tasks)]):
        ax.set_title(heading, fontsize=9)
    for ax in axes.flat:
        _clean(ax)
    figure.suptitle(title, fontsize=10)
    return figure


# --- samples ---------------------------------------------------------------------------------------

def _sample_tasks(sample: Mapping[str, Any], tasks: str | Sequence[str] | None) -> list[str]:
    """The tasks to draw of a sample: `tasks` (all must be labelled) or every label it holds."""
    if "image" not in sample:
        raise FigureInputError(f"sample has no 'image' (keys: {', '.join(map(str, sample))})")
    if not tasks:
        return [t for t in TASKS if t in sample]
    missing = [t for t in parse_tasks(tasks) if t not in sample]
    if missing:
        raise FigureInputError(f"sample has no label for {', '.join(missing)}; choose tasks among "
                               f"{', '.join(t for t in TASKS if t in sample)}")
    return list(parse_tasks(tasks))


def show_samples(samples: Sequence[Mapping[str, Any]], tasks: str | Sequence[str] | None = None, *,
                 class_names: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None,
                 title: str = "Samples") -> Figure:
    """One row per sample: its image and labels (the tasks of the first sample, or `tasks`)."""
    if not samples:
        raise FigureInputError("samples is empty; pass at least one data-contract sample")
    names = _sample_tasks(samples[0], tasks)
    figure = Figure(figsize=(PANEL_INCHES * (1 + len(names)) + 1.5, PANEL_INCHES * 0.6 * len(samples) + 0.4),
                    layout="constrained")
    axes = figure.subplots(len(samples), 1 + len(names), squeeze=False)
    for row, sample in zip(axes, samples):
        _sample_tasks(sample, names)
        row[0].imshow(image_to_rgb(sample["image"]))
        row[0].set_ylabel(str(sample.get("name", "")), fontsize=7)
        for ax, task in zip(row[1:], names):
            _draw_task(figure, ax, task, sample[task], palette, class_names, legend=True)
    return _titled_grid(figure, axes, names, title)


def show_sample(sample: Mapping[str, Any], tasks: str | Sequence[str] | None = None, *,
                class_names: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None,
                title: str | None = None) -> Figure:
    """The image and every label of one data-contract sample, side by side (one row).

    `tasks` (e.g. "SDNE") restricts the panels; by default every task the sample holds.
    """
    return show_samples([sample], tasks, class_names=class_names, palette=palette,
                        title=title or str(sample.get("name", "sample")))


# --- predictions -----------------------------------------------------------------------------------

def full_resolution(outputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """{task: {scale: raw}} or {task: raw} -> {task: raw scale-0 tensor [B, C, H, W]}."""
    return {task: (value[0] if isinstance(value, Mapping) else value) for task, value in outputs.items()}


def show_predictions(batch: Mapping[str, Any], outputs: Mapping[str, Any],
                     tasks: str | Sequence[str] | None = None, *, max_images: int = 2,
                     class_names: Sequence[str] | None = None,
                     palette: Sequence[Sequence[int]] | None = None, title: str = "Predictions vs labels"
                     ) -> Figure:
    """Labels and predictions of the first `max_images` images of a batch, one column per task.

    `outputs` are the model's raw outputs for `batch["image"]`; they are decoded with
    `tasks.decode_prediction` (semseg argmax, depth in metres, unit normals, edge probability).
    Rows alternate "label" and "prediction"; a task without a label in the batch shows "no label".
    """
    raw = full_resolution(outputs)
    names = parse_tasks(tasks) if tasks else tuple(t for t in TASKS if t in raw)
    absent = [t for t in names if t not in raw]
    if absent:
        raise FigureInputError(f"outputs have no {', '.join(absent)}; the model predicts "
                               f"{', '.join(raw) or 'nothing'}")
    count = min(max_images, int(batch["image"].shape[0]))
    if count < 1:
        raise FigureInputError(f"max_images={max_images} and a batch of {batch['image'].shape[0]}: "
                               "nothing to draw; use max_images >= 1")
    decoded = {t: decode_prediction(t, raw[t].detach().float().cpu()) for t in names}
    figure = Figure(figsize=(PANEL_INCHES * (1 + len(names)) + 1.5, PANEL_INCHES * 0.6 * 2 * count),
                    layout="constrained")
    axes = figure.subplots(2 * count, 1 + len(names), squeeze=False)
    for index in range(count):
        for row, kind in enumerate(("label", "prediction")):
            line = axes[2 * index + row]
            line[0].imshow(image_to_rgb(batch["image"][index]))
            line[0].set_ylabel(f"image {index}\n{kind}", fontsize=8)
            for ax, task in zip(line[1:], names):
                label = batch[task][index] if task in batch else None
                value = decoded[task][index] if kind == "prediction" else label
                if value is None:
                    ax.text(0.5, 0.5, "no label", ha="center", va="center", transform=ax.transAxes)
                    continue
                _draw_task(figure, ax, task, value, palette, class_names, index == 0 and row == 0, label)
    return _titled_grid(figure, axes, names, title)


# --- learning curves -------------------------------------------------------------------------------

def _as_runs(history: Any) -> dict[str, Any]:
    """One History (or its dict) -> {"": it}; a mapping of label -> History stays as it is."""
    if hasattr(history, "steps") or (isinstance(history, Mapping) and "steps" in history):
        return {"": history}
    if isinstance(history, Mapping) and history:
        return dict(history)
    raise FigureInputError("history must be a train.History, its to_dict(), or {label: History}")


def _rows(history: Any, part: str) -> list[Mapping[str, float]]:
    return list(getattr(history, part) if hasattr(history, part) else history[part])


def default_history_keys(history: Any) -> list[str]:
    """The per-task losses (or the total) of every run, then the main metric of every task evaluated."""
    losses: list[str] = []
    mains: list[str] = []
    for run in _as_runs(history).values():
        columns = {key for row in _rows(run, "steps") for key in row}
        evaluated = {key for row in _rows(run, "evals") for key in row}
        losses += [f"loss/{t}" for t in TASKS if f"loss/{t}" in columns] or ["loss"]
        mains += [f"{t}/{TASKS[t].main_metric}" for t in TASKS if f"{t}/{TASKS[t].main_metric}" in evaluated]
    return list(dict.fromkeys([*losses, *mains]))


def smooth(values: Sequence[float], smoothing: float) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard's smoothing), 0 <= smoothing < 1."""
    if not 0.0 <= smoothing < 1.0:
        raise FigureInputError(f"smoothing={smoothing} must lie in [0, 1)")
    out, running = np.empty(len(values)), 0.0
    for index, value in enumerate(values):
        running = smoothing * running + (1.0 - smoothing) * value
        out[index] = running / (1.0 - smoothing ** (index + 1))
    return out


def _key_unit(key: str) -> str:
    group, _, name = key.partition("/")
    return group if group in ("loss", "weight", "lr") or not name else name


def _key_title(key: str) -> str:
    task, _, metric = key.partition("/")
    if task in ("loss", "weight", "lr"):
        return f"{task} of {metric}" if metric else task
    arrow = "" if task not in TASKS else (" (higher is better)" if TASKS[task].direction(metric) > 0
                                          else " (lower is better)")
    return f"{task} {metric}{arrow}"


def plot_history(history: Any, keys: Sequence[str] | None = None, *, title: str = "Learning curves",
                 smoothing: float = 0.6, log_y: bool = False) -> Figure:
    """Learning curves: one panel per history column, one line per run.

    Step columns ("loss", "loss/<task>", "lr/<group>") are drawn raw (faint) and smoothed; evaluation
    columns ("<task>/<metric>", "weight/<task>", "delta_m") as lines with markers.
    """
    runs = _as_runs(history)
    keys = list(keys) if keys else default_history_keys(history)
    if not keys:
        raise FigureInputError("the history has no rows to plot; train for at least one step")
    columns = 3 if len(keys) % 3 == 0 else min(len(keys), 4)
    rows = math.ceil(len(keys) / columns)
    figure = Figure(figsize=(4.0 * columns, 2.8 * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax, key in zip(axes, keys):
        drawn = [_plot_key(ax, run, key, label, colormaps["tab10"](index % 10), smoothing)
                 for index, (label, run) in enumerate(runs.items())]
        if not any(drawn):
            known = sorted({k for run in runs.values() for part in ("steps", "evals")
                            for row in _rows(run, part) for k in row})
            raise FigureInputError(f"history has no column {key!r}; known: {', '.join(known)}")
        ax.set_title(_key_title(key), fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel(_key_unit(key))
        ax.set_yscale("log" if log_y else "linear")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    figure.suptitle(title, fontsize=11)
    return figure


def _plot_key(ax: Axes, run: Any, key: str, label: str, colour: Any, smoothing: float) -> bool:
    """Draw column `key` of one run; False when the run has no such column."""
    for part in ("steps", "evals"):
        points = [(row["step"], row[key]) for row in _rows(run, part) if key in row]
        if not points:
            continue
        steps, values = map(np.asarray, zip(*points))
        if part == "steps":
            ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smooth(values, smoothing), color=colour, label=label or None)
        else:
            ax.plot(steps, values, color=colour, marker="o", markersize=3, label=label or None)
        return True
    return False


# --- dataset statistics --------------------------------------------------------------------------

def class_frequencies(labels: Iterable[Any]) -> dict[int, float]:
    """Pixel fraction of each class id over label maps [H, W] (ignored pixels excluded), by id."""
    counts: dict[int, int] = {}
    for label in labels:
        ids, numbers = np.unique(_numpy(label).astype(np.int64), return_counts=True)
        for class_id, number in zip(ids.tolist(), numbers.tolist()):
            if class_id != IGNORE_INDEX:
                counts[class_id] = counts.get(class_id, 0) + number
    total = sum(counts.values())
    if total == 0:
        raise FigureInputError("no labelled pixel in the label maps; pass non-empty semseg labels")
    return {class_id: counts[class_id] / total for class_id in sorted(counts)}


def plot_class_frequencies(frequencies: Mapping[int, float], class_names: Sequence[str] | None = None,
                           palette: Sequence[Sequence[int]] | None = None, *,
                           title: str = "Class frequencies") -> Figure:
    """A bar chart of pixel fractions per class, in the classes' colours, most frequent first."""
    names = class_names or CITYSCAPES_CLASSES
    order = sorted(frequencies, key=frequencies.get, reverse=True)
    colours = palette or default_palette(max([*order, len(names) - 1]) + 1)
    figure = Figure(figsize=(1.0 + 0.55 * len(order), 2.8), layout="constrained")
    ax = figure.subplots()
    ax.bar([names[i] if i < len(names) else f"class {i}" for i in order], [100 * frequencies[i] for i in order],
           color=[np.asarray(colours[i]) / 255.0 for i in order], edgecolor="black", linewidth=0.4)
    ax.set_ylabel("pixels (%)")
    ax.set_xlabel("class")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax.set_title(title, fontsize=10)
    return figure


# --- multi-task comparisons -----------------------------------------------------------------------

def plot_task_deltas(deltas: Mapping[str, Mapping[str, float]], *,
                     title: str = "Per-task change against the single-task baselines") -> Figure:
    """Grouped bars of per-task relative changes in % ({run: {task: delta}}, e.g. delta_m_per_task).

    Positive bars are better than the single-task baseline whatever the metric's direction.
    """
    if not deltas:
        raise FigureInputError("deltas is empty; pass {run label: {task: delta in %}}")
    tasks = [t for t in TASKS if any(t in entry for entry in deltas.values())]
    width = 0.8 / len(deltas)
    figure = Figure(figsize=(1.5 + 1.3 * len(tasks) * max(1, len(deltas) / 2), 3.0), layout="constrained")
    ax = figure.subplots()
    for index, (label, entry) in enumerate(deltas.items()):
        positions = np.arange(len(tasks)) + (index - (len(deltas) - 1) / 2) * width
        ax.bar(positions, [entry.get(t, np.nan) for t in tasks], width, label=label,
               color=colormaps["tab10"](index % 10))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(tasks)), [f"{t}\n({TASKS[t].main_metric})" for t in tasks])
    ax.set_xlabel("task (main metric)")
    ax.set_ylabel("better than single-task (%)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return figure


# --- tables ----------------------------------------------------------------------------------------

def _cell(entry: Mapping[str, Any], column: str) -> float | None:
    task, _, metric = column.partition("/")
    value = entry.get(task, {}).get(metric) if metric else entry.get(task)
    return None if value is None else float(value)


def _direction(column: str) -> int:
    task, _, metric = column.partition("/")
    if task in TASKS:
        return TASKS[task].direction(metric)
    return 1  # delta_m and other summary numbers: higher is better


def metrics_table(results: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] | None = None, *,
                  title: str = "Metrics", digits: int = 2) -> Figure:
    """A table figure: one row per run, one column per metric ("semseg/mIoU", "delta_m", ...).

    `results` maps a run label to its metrics ({task: {metric: value}}, plus top-level numbers such
    as "delta_m"). By default the columns are each task's main metric, then "delta_m" when present.
    Arrows mark the direction of each metric (higher/lower is better); the best value is bold.
    """
    if not results:
        raise FigureInputError("results is empty; pass {run label: {task: {metric: value}}}")
    if metrics is None:
        present = [t for t in TASKS if any(t in entry for entry in results.values())]
        metrics = [f"{t}/{TASKS[t].main_metric}" for t in present]
        metrics += ["delta_m"] if any("delta_m" in entry for entry in results.values()) else []
    grid = [[_cell(entry, column) for column in metrics] for entry in results.values()]
    headers = [f"{column} {'↑' if _direction(column) > 0 else '↓'}" for column in metrics]
    text = [["–" if value is None else f"{value:.{digits}f}" for value in row] for row in grid]
    figure = Figure(figsize=(1.6 + 1.5 * len(metrics), 0.6 + 0.3 * (len(results) + 1)), layout="constrained")
    ax = figure.subplots()
    ax.axis("off")
    table = ax.table(cellText=text, rowLabels=list(results), colLabels=headers, loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for column, direction in enumerate(map(_direction, metrics)):
        values = [row[column] for row in grid if row[column] is not None]
        if len(values) < 2:
            continue
        best = max(values) if direction > 0 else min(values)
        for row_index, row in enumerate(grid):
            if row[column] == best:
                table[row_index + 1, column].set_text_props(fontweight="bold")
    ax.set_title(title, fontsize=10)
    return figure
