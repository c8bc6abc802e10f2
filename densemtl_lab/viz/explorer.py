"""The attention explorer: what one trained DenseMTL's xTAMs looked at, for one image (notebook 05).

The mTEB (DenseMTL, WACV 2023, method section; docs/faithfulness.md, "xTAM" and "mTEB") holds one
xTAM per ordered task pair (target i <- source j). For a query pixel of the target, the xTAM's correlation
branch spreads one softmax over the source's positions on a coarse grid (H/2/ds x W/2/ds):
A = softmax(Q K^T / sqrt(C)), each row summing to 1. The self-attention branch gates the source
feature with sigmoid(conv3x3'(g)), one gate per source position whatever the query. Both are fused
into the directional feature f_{j->i}, whose magnitude says where the pair sends something.

`AttentionCache.from_model` runs the model's inspectable path once per image and keeps everything
the explorer draws as numpy arrays; a control change only re-slices them (`branch_map`) and redraws
(`AttentionView.update`, which keeps one figure; `render_attention` draws a new one).
`attention_explorer` is the ipywidgets front end over one `AttentionView`, and `render_query_grid`
the static figure for headless runs (papermill, CI). `show_pair_statistics` summarises every pair
(attention entropy, alpha), `query_points` picks query pixels by class, and `show_maps` draws maps
of any resolution over the image (notebook 04's step-by-step figures).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colorbar import Colorbar
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from densemtl_lab.atomic import write_bytes_atomic
from densemtl_lab.models.densemtl import DenseMTL
from densemtl_lab.models.mteb import pair_name
from densemtl_lab.tasks import decode_prediction
from densemtl_lab.viz.colour import colourise
from densemtl_lab.viz.figures import image_to_rgb

Pair = tuple[str, str]

#: Branch name -> what the explorer calls it.
BRANCHES: dict[str, str] = {
    "correlation": "correlation attention",
    "self_attention": "self-attention gate",
    "magnitude": "|f_{j->i}|",
}


class ExplorerError(ValueError):
    """A request the attention explorer cannot answer."""


class UnknownPairError(ExplorerError):
    """A (target, source) pair that the model has no xTAM for."""


class UnknownBranchError(ExplorerError):
    """A branch name that is not one of BRANCHES, or one the model switched off."""


class QueryOutsideImageError(ExplorerError):
    """A query pixel outside the image."""


@dataclass
class AttentionCache:
    """What the explorer needs for one image, from one inspectable forward of a DenseMTL model.

    attention[(target, source)]: [Nq, Nk] correlation attention, rows sum to 1, positions row-major
    over `grid`; gate[pair]: [H/2, W/2] self-attention gate averaged over channels;
    magnitude[pair]: [H/2, W/2] channel L2 norm of f_{source->target}; alpha[pair]: mean |alpha| of
    the correlation branch (0 when untrained); predictions[task]: [H, W, 3] uint8 colour picture.
    A branch the model switched off has no entries.
    """

    name: str
    image: np.ndarray
    tasks: tuple[str, ...]
    grid: tuple[int, int]
    attention: dict[Pair, np.ndarray]
    gate: dict[Pair, np.ndarray]
    magnitude: dict[Pair, np.ndarray]
    alpha: dict[Pair, float]
    predictions: dict[str, np.ndarray]

    @property
    def size(self) -> tuple[int, int]:
        """The image's (H, W)."""
        return self.image.shape[0], self.image.shape[1]

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """Every (target, source) pair, targets in canonical order."""
        return tuple((t, s) for t in self.tasks for s in self.tasks if s != t)

    def sources(self, target: str) -> tuple[str, ...]:
        """The tasks that send features to `target`."""
        return tuple(s for t, s in self.pairs if t == target)

    def branches(self) -> tuple[str, ...]:
        """The branches this model has (a switched-off branch is left out)."""
        stored = {"correlation": self.attention, "self_attention": self.gate, "magnitude": self.magnitude}
        return tuple(name for name in BRANCHES if stored[name])

    @classmethod
    @torch.no_grad()
    def from_model(cls, model: DenseMTL, sample: Mapping[str, Any]) -> AttentionCache:
        """Run `model` (eval mode) on `sample["image"]` [3, H, W] once and keep what the explorer draws."""
        if not isinstance(model, DenseMTL):
            raise ExplorerError(f"the explorer needs a DenseMTL model (it has the xTAMs), got "
                                f"{type(model).__name__}; load the 'densemtl' run")
        device = next(model.parameters()).device
        image = sample["image"][None].to(device)  # 1, 3, H, W
        was_training = model.training
        model.eval()
        try:
            half = model.features_half(image).before  # {task: 1, C, H/2, W/2}
            outputs, inspection = model(image, return_attention=True)
        finally:
            model.train(was_training)
        gate, alpha = {}, {}
        for target, source in inspection:
            xtam = model.exchange.xtams[pair_name(target, source)]
            if xtam.self_attention is not None:
                extracted = xtam.extractor(half[source])  # 1, C, H/2, W/2
                gate[target, source] = _numpy(torch.sigmoid(xtam.self_attention.gate(extracted))[0].mean(0))
            if xtam.correlation is not None and xtam.correlation.alpha is not None:
                alpha[target, source] = float(xtam.correlation.alpha.abs().mean())
        first = next(iter(inspection.values()))
        return cls(
            name=str(sample.get("name", "")),
            image=image_to_rgb(sample["image"]),
            tasks=tuple(model.tasks),
            grid=first.grid,
            attention={pair: _numpy(seen.attention[0]) for pair, seen in inspection.items()
                       if seen.attention is not None},
            gate=gate,
            magnitude={pair: _numpy(seen.directional[0].norm(dim=0)) for pair, seen in inspection.items()},
            alpha=alpha,
            predictions={task: colourise(task, decode_prediction(task, outputs[task][0].float())[0])
                         for task in model.tasks},
        )


#: A trained `course` DenseMTL's caches for a few validation scenes (data_scripts/ship_course_attention.py).
COURSE_ATTENTION = Path(__file__).resolve().parents[1] / "resources" / "course_attention.npz"
_PAIR_FIELDS = ("attention", "gate", "magnitude")


def save_caches(caches: Sequence[AttentionCache], path: str | Path, about: Mapping[str, Any]) -> Path:
    """Write `caches` to one compressed .npz (plain arrays and a JSON header; no pickle), atomically.

    `about` (JSON-able: where the model came from) is stored beside them; `load_caches` returns it.
    """
    arrays: dict[str, np.ndarray] = {}
    header = {"about": dict(about), "caches": []}
    for index, cache in enumerate(caches):
        header["caches"].append({"name": cache.name, "tasks": list(cache.tasks), "grid": list(cache.grid),
                                 "alpha": {_pair_key(pair): value for pair, value in cache.alpha.items()}})
        arrays[f"{index}/image"] = cache.image
        for field in _PAIR_FIELDS:
            for pair, values in getattr(cache, field).items():
                arrays[f"{index}/{field}/{_pair_key(pair)}"] = values
        for task, picture in cache.predictions.items():
            arrays[f"{index}/predictions/{task}"] = picture
    arrays["header"] = np.array(json.dumps(header))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(Path(path), buffer.getvalue())


def load_caches(path: str | Path = COURSE_ATTENTION) -> tuple[list[AttentionCache], dict[str, Any]]:
    """The caches `save_caches` wrote, and its `about` record (default: the shipped course DenseMTL's)."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    header = json.loads(str(arrays.pop("header")))
    caches = []
    for index, entry in enumerate(header["caches"]):
        fields: dict[str, dict[Any, np.ndarray]] = {field: {} for field in (*_PAIR_FIELDS, "predictions")}
        for key, values in arrays.items():
            number, field, *rest = key.split("/")
            if int(number) == index and field in fields:
                fields[field][_pair_from_key(rest[0]) if field in _PAIR_FIELDS else rest[0]] = values
        caches.append(AttentionCache(
            name=entry["name"], image=arrays[f"{index}/image"], tasks=tuple(entry["tasks"]),
            grid=(int(entry["grid"][0]), int(entry["grid"][1])), attention=fields["attention"],
            gate=fields["gate"], magnitude=fields["magnitude"],
            alpha={_pair_from_key(key): float(value) for key, value in entry["alpha"].items()},
            predictions=fields["predictions"]))
    return caches, header["about"]


def _pair_key(pair: Pair) -> str:
    return f"{pair[0]}<-{pair[1]}"


def _pair_from_key(key: str) -> Pair:
    target, source = key.split("<-")
    return target, source


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _check_request(cache: AttentionCache, target: str, source: str, branch: str, x: int, y: int) -> None:
    if (target, source) not in cache.pairs:
        pairs = ", ".join(f"{t}<-{s}" for t, s in cache.pairs)
        raise UnknownPairError(f"no xTAM for target={target!r} <- source={source!r}; this model has {pairs}")
    if branch not in cache.branches():
        raise UnknownBranchError(f"branch={branch!r}; choose one of {', '.join(cache.branches())}")
    height, width = cache.size
    if not (0 <= x < width and 0 <= y < height):
        raise QueryOutsideImageError(f"query (x={x}, y={y}) lies outside the {height}x{width} image; "
                                     f"give 0 <= x < {width} and 0 <= y < {height}")


def query_cell(cache: AttentionCache, x: int, y: int) -> tuple[int, int]:
    """The (row, column) of the query grid cell that covers image pixel (x, y).

    The correlation branch takes every ds-th pixel of the H/2 target feature as a query and copies
    its answer to the ds x ds block it stands for, so one cell covers (H/grid_h) x (W/grid_w) pixels.
    """
    height, width = cache.size
    return y * cache.grid[0] // height, x * cache.grid[1] // width


def branch_map(cache: AttentionCache, target: str, source: str, branch: str, x: int, y: int) -> np.ndarray:
    """The map a branch shows for query (x, y): correlation [grid_h, grid_w] (sums to 1), else [H/2, W/2].

    The self-attention gate and |f_{j->i}| do not depend on the query; only correlation does.
    """
    _check_request(cache, target, source, branch, x, y)
    if branch == "correlation":
        row, column = query_cell(cache, x, y)
        return cache.attention[target, source][row * cache.grid[1] + column].reshape(cache.grid)
    return (cache.gate if branch == "self_attention" else cache.magnitude)[target, source]


def _pair_title(target: str, source: str) -> str:
    return f"{target} <- {source}"


def _show_image(ax: Axes, picture: np.ndarray, title: str) -> AxesImage:
    """An image panel: titled, without ticks (ticks cost most of a redraw and say little here)."""
    shown = ax.imshow(picture, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def _overlay(ax: Axes, size: tuple[int, int], values: np.ndarray, cmap: str = "inferno") -> AxesImage:
    """Draw `values` (any grid) stretched over an image of `size` (H, W), nearest: one block per cell."""
    height, width = size
    return ax.imshow(values, cmap=cmap, alpha=0.65, interpolation="nearest",
                     extent=(-0.5, width - 0.5, height - 0.5, -0.5))


def _cross(ax: Axes, x: int, y: int) -> Line2D:
    (line,) = ax.plot([x], [y], marker="+", color="cyan", markersize=10, markeredgewidth=2, gid="query")
    return line


def _cell_corner(cache: AttentionCache, x: int, y: int) -> tuple[float, float]:
    """The top-left corner, in image coordinates, of the query cell that covers pixel (x, y)."""
    row, column = query_cell(cache, x, y)
    return column * cache.size[1] / cache.grid[1] - 0.5, row * cache.size[0] / cache.grid[0] - 0.5


def _mark_query(ax: Axes, cache: AttentionCache, x: int, y: int) -> tuple[Rectangle, Line2D]:
    """A cross on the query pixel and a box around the query cell it belongs to."""
    height, width = cache.size
    box = ax.add_patch(Rectangle(_cell_corner(cache, x, y), width / cache.grid[1], height / cache.grid[0],
                                 fill=False, edgecolor="cyan", linewidth=1.2))
    cross = _cross(ax, x, y)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    return box, cross


def _colour_bar(figure: Figure, ax: Axes, drawn: AxesImage, label: str) -> Colorbar:
    bar = figure.colorbar(drawn, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    bar.locator = MaxNLocator(4)
    bar.update_ticks()
    return bar


def _summary(cache: AttentionCache, target: str, source: str, branch: str, values: np.ndarray) -> str:
    cell = f"{cache.size[0] // cache.grid[0]}x{cache.size[1] // cache.grid[1]}"
    lines = [f"image {cache.size[0]}x{cache.size[1]}, attention grid {cache.grid[0]}x{cache.grid[1]}",
             f"one grid cell = {cell} pixels"]
    if branch == "correlation":
        positions = values.size
        lines.append(f"max weight {values.max():.3f} (uniform: 1/{positions} = {1 / positions:.3f})")
        if (target, source) in cache.alpha:
            lines.append(f"mean |alpha| {cache.alpha[target, source]:.3g} (0: branch off)")
    else:
        lines += [f"{BRANCHES[branch]}: min {values.min():.3g}, max {values.max():.3g}",
                  "the same for every query pixel"]
    return "\n".join(lines)


class AttentionView:
    """The explorer's figure, built once; `update` redraws it for a control change.

    Panels: image + query, the branch's map over the image, |f_{j->i}|, both predictions and a text
    panel. A control change only swaps arrays, limits and texts: creating the figure's artists
    costs most of a full redraw, so the widget keeps one view. The branch panel's image array
    (gid "branch-map") is `branch_map(...)` itself, before any upsampling: matplotlib stretches it
    over the image, one flat block per grid cell.
    """

    def __init__(self, cache: AttentionCache) -> None:
        self.cache = cache
        # A fixed layout: constrained layout would triple the time of a redraw.
        self.figure = Figure(figsize=(12, 4.6))
        axes = self.figure.subplots(2, 3, gridspec_kw={"left": 0.01, "right": 0.95, "bottom": 0.02,
                                                       "top": 0.86, "wspace": 0.25, "hspace": 0.25})
        self.axes = axes
        self.title = self.figure.suptitle("", fontsize=11)
        _show_image(axes[0, 0], cache.image, "image and query cell")
        for ax in axes[0, 1:]:
            _show_image(ax, cache.image, "")
        first = cache.pairs[0]
        self.branch_image = _overlay(axes[0, 1], cache.size, cache.magnitude[first])
        self.branch_image.set_gid("branch-map")
        self.branch_bar = _colour_bar(self.figure, axes[0, 1], self.branch_image, "")
        self.magnitude_image = _overlay(axes[0, 2], cache.size, cache.magnitude[first], cmap="viridis")
        _colour_bar(self.figure, axes[0, 2], self.magnitude_image, "L2 norm")
        self.markers = [_mark_query(ax, cache, 0, 0) for ax in axes[0]]
        self.predictions = [_show_image(ax, cache.predictions[task], "") for ax, task in zip(axes[1, :2], first)]
        axes[1, 2].axis("off")
        axes[1, 2].set_title("what the numbers say", fontsize=9)
        self.summary = axes[1, 2].text(0.0, 0.95, "", va="top", fontsize=9, family="monospace",
                                       transform=axes[1, 2].transAxes)

    def update(self, target: str, source: str, branch: str, x: int, y: int) -> Figure:
        """Show `branch` of the pair (target <- source) for query pixel (x, y); returns the figure."""
        cache, axes = self.cache, self.axes
        values = branch_map(cache, target, source, branch, x, y)
        self.title.set_text(f"{cache.name}: {BRANCHES[branch]} for {_pair_title(target, source)}, "
                            f"query (x={x}, y={y})")
        _set_map(self.branch_image, values)
        self.branch_bar.set_label("weight" if branch == "correlation" else "value", fontsize=8)
        axes[0, 1].set_title(f"{BRANCHES[branch]} over {source} positions", fontsize=9)
        _set_map(self.magnitude_image, cache.magnitude[target, source])
        axes[0, 2].set_title(f"|f {source}->{target}| (any query)", fontsize=9)
        for box, cross in self.markers:
            box.set_xy(_cell_corner(cache, x, y))
            cross.set_data([x], [y])
        for image, ax, task, role in zip(self.predictions, axes[1], (target, source), ("target", "source")):
            image.set_data(cache.predictions[task])
            ax.set_title(f"prediction: {task} ({role})", fontsize=9)
        self.summary.set_text(_summary(cache, target, source, branch, values))
        return self.figure


def _set_map(image: AxesImage, values: np.ndarray) -> None:
    image.set_data(values)
    image.set_clim(float(values.min()), float(values.max()))


def render_attention(cache: AttentionCache, target: str, source: str, branch: str, x: int, y: int) -> Figure:
    """One explorer view (a new figure): see `AttentionView` for its panels."""
    return AttentionView(cache).update(target, source, branch, x, y)


def render_query_grid(cache: AttentionCache, pairs: Sequence[Pair], points: Sequence[tuple[int, int]],
                      branch: str = "correlation") -> Figure:
    """The static explorer: one row per (target, source) pair, one column per query point (x, y)."""
    figure = Figure(figsize=(3.0 * len(points), 1.95 * len(pairs) + 0.5), layout="constrained")
    axes = figure.subplots(len(pairs), len(points), squeeze=False)
    figure.suptitle(f"{BRANCHES[branch]} of {cache.name} (rows: target <- source; columns: query)",
                    fontsize=11)
    for row, (target, source) in enumerate(pairs):
        for column, (x, y) in enumerate(points):
            ax = axes[row, column]
            values = branch_map(cache, target, source, branch, x, y)
            title = f"{_pair_title(target, source)}, query ({x}, {y})"
            if branch == "correlation":  # colours stretch to each panel: say how far from uniform it is
                title += f"\nlargest weight {values.max() * values.size:.2f} x uniform"
            _show_image(ax, cache.image, title)
            _overlay(ax, cache.size, values).set_gid("branch-map")
            _mark_query(ax, cache, x, y)
    return figure


def attention_entropy(cache: AttentionCache) -> dict[Pair, float]:
    """Mean normalised entropy of each pair's attention rows: 1 = uniform over the source, 0 = one position.

    H(a) / log(Nk) averaged over queries, with H(a) = -sum_k a_k log a_k.
    """
    entropy = {}
    for pair, attention in cache.attention.items():
        safe = np.clip(attention, 1e-12, 1.0)
        rows = -(attention * np.log(safe)).sum(axis=1) / np.log(attention.shape[1])
        entropy[pair] = float(rows.mean())
    return entropy


def show_maps(image: np.ndarray, maps: Mapping[str, np.ndarray], title: str,
              query: tuple[int, int] | None = None) -> Figure:
    """The image, then each map (any resolution) stretched over it with a colour bar; a cross on `query`.

    For the step-by-step lesson (notebook 04): a gate at H/2, one attention row on the source grid.
    """
    size = image.shape[:2]
    figure = Figure(figsize=(3.6 * (1 + len(maps)), 2.3), layout="constrained")
    axes = figure.subplots(1, 1 + len(maps), squeeze=False)[0]
    _show_image(axes[0], image, "image")
    for ax, (name, values) in zip(axes[1:], maps.items()):
        _show_image(ax, image, name)
        _colour_bar(figure, ax, _overlay(ax, size, np.asarray(values)), "value")
    if query is not None:
        for ax in axes:
            _cross(ax, *query)
    figure.suptitle(title, fontsize=10)
    return figure


def show_pair_statistics(cache: AttentionCache) -> Figure:
    """Per pair: how spread the correlation attention is (normalised entropy) and how large alpha is."""
    pairs = [pair for pair in cache.pairs if pair in cache.attention]
    if not pairs:
        raise UnknownBranchError("this model has no correlation branch, so no attention statistics")
    labels = [_pair_title(*pair) for pair in pairs]
    entropy = attention_entropy(cache)
    figure = Figure(figsize=(10, 2.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.barh(labels, [entropy[pair] for pair in pairs], color="tab:purple")
    left.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    left.set_xlabel("normalised entropy (1 = uniform over the source)")
    left.set_title("how spread the attention is", fontsize=9)
    right.barh(labels, [cache.alpha.get(pair, np.nan) for pair in pairs], color="tab:orange")
    right.set_xlabel("mean |alpha| (0 = branch off)")
    right.set_title("how far training switched the branch on", fontsize=9)
    for ax in (left, right):
        ax.set_ylabel("target <- source")
        ax.invert_yaxis()
    figure.suptitle(f"correlation branch of every xTAM on {cache.name}", fontsize=10)
    return figure


def query_points(labels: np.ndarray | torch.Tensor, class_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """For each class of `class_ids` present in `labels` [H, W], a pixel (x, y) of that class near its middle.

    The pixel of the class closest to the median row and column of the class's pixels (so it lies in
    the class even when the region is not convex); the first in raster order on ties.
    """
    ids = labels.cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    points = {}
    for class_id in class_ids:
        rows, columns = np.nonzero(ids == class_id)
        if rows.size == 0:
            continue
        distance = (rows - np.median(rows)) ** 2 + (columns - np.median(columns)) ** 2
        nearest = int(np.argmin(distance))
        points[class_id] = (int(columns[nearest]), int(rows[nearest]))
    return points


def figure_png(figure: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes: one draw, where Jupyter's inline display draws twice (tight bbox)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def attention_explorer(cache: AttentionCache):
    """The ipywidgets explorer over `render_attention` (sliders and dropdowns, continuous_update=False)."""
    import ipywidgets as widgets
    from IPython.display import Image, display

    height, width = cache.size
    first = cache.tasks[0]
    target = widgets.Dropdown(options=cache.tasks, value=first, description="target")
    source = widgets.Dropdown(options=cache.sources(first), description="source")
    branch = widgets.Dropdown(options=[(BRANCHES[name], name) for name in cache.branches()], description="branch")
    x = widgets.IntSlider(value=width // 2, min=0, max=width - 1, description="query x", continuous_update=False)
    y = widgets.IntSlider(value=height // 2, min=0, max=height - 1, description="query y",
                          continuous_update=False)

    def follow_target(change: dict[str, Any]) -> None:  # registered first: sources update before a redraw
        source.options = cache.sources(change["new"])

    target.observe(follow_target, names="value")

    view = AttentionView(cache)

    def draw(target: str, source: str, branch: str, x: int, y: int) -> None:
        if (target, source) not in cache.pairs:  # the moment between a target change and its sources
            return
        display(Image(data=figure_png(view.update(target, source, branch, x, y))))

    shown = widgets.interactive_output(draw, {"target": target, "source": source, "branch": branch,
                                              "x": x, "y": y})
    return widgets.VBox([widgets.HBox([target, source, branch]), widgets.HBox([x, y]), shown])


__all__ = [
    "AttentionCache", "AttentionView", "BRANCHES", "ExplorerError", "QueryOutsideImageError", "UnknownBranchError",
    "UnknownPairError", "attention_entropy", "attention_explorer", "branch_map", "figure_png", "query_cell",
    "query_points", "render_attention", "render_query_grid", "show_maps", "show_pair_statistics",
]
