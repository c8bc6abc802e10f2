"""Response time of the attention explorer to a control change on the CPU; prints one JSON object.

A control change in `viz.explorer.attention_explorer` re-slices the cached maps and redraws. Timed
per change, at each size: `new_figure` = `render_attention(...)` (a new figure) + drawing it to an Agg
canvas; `view_update` = `AttentionView.update(...)` (the figure the widget keeps) + an Agg draw; and
`widget_png` = `AttentionView.update` + `figure_png`, exactly what the widget does before showing
the PNG. The browser's display of the PNG is not included. Each gets the wall-clock median, 90th
percentile and maximum, and the median CPU time of this process (`cpu_median_s`): drawing is
single-threaded, so on a busy machine the CPU time is close to what the change would take on an
idle core (`load_average` says how busy the machine was). The model is the quick profile's DenseMTL
(untrained: the weights do not change the work), at the quick profile's image size and at 128x256.
The issue asks for at most 0.3 s per change.

    python bench/bench_explorer.py
    python bench/bench_explorer.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import matplotlib
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

from densemtl_lab.config import get_profile
from densemtl_lab.machine import cpu_model
from densemtl_lab.models import build_model
from densemtl_lab.viz.explorer import AttentionCache, AttentionView, figure_png, render_attention

LIMIT_S = 0.3


def control_changes(cache: AttentionCache) -> list[tuple[str, str, str, int, int]]:
    """A session's worth of changes: the query moves, then the pair and the branch change."""
    height, width = cache.size
    moves = [(width * k // 8, height * k // 8) for k in range(1, 8)]
    changes = [("depth", "semseg", "correlation", x, y) for x, y in moves]
    changes += [(t, s, "correlation", width // 2, height // 2) for t, s in cache.pairs]
    changes += [("depth", "semseg", branch, width // 3, height // 3) for branch in cache.branches()]
    return changes


def _timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def time_change(cache: AttentionCache, view: AttentionView, change: tuple[str, str, str, int, int]
                ) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of one control change three ways: a new figure + Agg draw, the view's
    update + Agg draw, and the widget's path (the view's update + PNG)."""
    return {
        "new_figure": _timed(lambda: FigureCanvasAgg(render_attention(cache, *change)).draw()),
        "view_update": _timed(lambda: FigureCanvasAgg(view.update(*change)).draw()),
        "widget_png": _timed(lambda: figure_png(view.update(*change))),
    }


def measure(size: tuple[int, int], repeats: int) -> dict[str, float]:
    """Cache build and per-change times at one image size."""
    quick = get_profile("quick")
    torch.manual_seed(0)
    model = build_model("densemtl", quick.model.tasks, num_classes=19, backbone=quick.model.backbone,
                        decoder_widths=quick.model.decoder_widths)
    started = time.perf_counter()
    cache = AttentionCache.from_model(model, {"image": torch.rand(3, *size), "name": "bench"})
    cache_s = time.perf_counter() - started
    changes = control_changes(cache)
    view = AttentionView(cache)
    time_change(cache, view, changes[0])  # warm-up: fonts and colour maps load once per process
    times: dict[str, list[tuple[float, float]]] = {"new_figure": [], "view_update": [], "widget_png": []}
    for _ in range(repeats):
        for change in changes:
            for name, seconds in time_change(cache, view, change).items():
                times[name].append(seconds)
    summary = {name: _summary(values) for name, values in times.items()}
    return {"cache_build_s": round(cache_s, 4), "changes": len(changes) * repeats, **summary,
            "widget_within_limit": summary["widget_png"]["median_s"] <= LIMIT_S,
            "widget_cpu_within_limit": summary["widget_png"]["cpu_median_s"] <= LIMIT_S}


def _summary(values: list[tuple[float, float]]) -> dict[str, float]:
    walls = sorted(wall for wall, _ in values)
    return {"median_s": round(statistics.median(walls), 4), "p90_s": round(walls[int(0.9 * (len(walls) - 1))], 4),
            "max_s": round(walls[-1], 4), "cpu_median_s": round(statistics.median(cpu for _, cpu in values), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="passes over the sequence of changes")
    args = parser.parse_args()
    quick_size = tuple(get_profile("quick").data.size)
    sizes = {f"{h}x{w}": (h, w) for h, w in (quick_size, (128, 256))}
    results = {name: measure(size, args.repeats) for name, size in sizes.items()}
    print(json.dumps({
        "benchmark": "explorer_response", "limit_s": LIMIT_S, "device": "cpu", "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(), "matplotlib": matplotlib.__version__,
        "sizes": results,
    }, indent=2))


if __name__ == "__main__":
    main()
