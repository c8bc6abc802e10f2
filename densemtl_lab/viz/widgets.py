"""Small ipywidgets explorers over pure `render_*` functions (the functions are what the tests check).

Each builder returns a widget box: its controls (`continuous_update=False`, so a figure is drawn
when the slider is released, not on every pixel of the drag) above an `Output` that shows the
Figure a render function returns (`interactive_output`). Under papermill, nbval or CI no widget
front end exists (`notebook.widgets_available()` is False); notebooks then show the static
fallback figure instead (`render_scene_grid`, `render_severity_row`).

    scene_browser(dataset)                          # an index slider over a dataset's samples
    severity_explorer(render_fn, value=0.5)         # a severity slider; render_fn(severity) -> Figure
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import ipywidgets as widgets
from IPython.display import display
from matplotlib.figure import Figure

from densemtl_lab.viz.figures import FigureInputError, image_to_rgb, show_sample, show_samples

Sample = Mapping[str, Any]


class WidgetOptionError(ValueError):
    """A slider option out of range (e.g. a start value outside [minimum, maximum])."""


# --- pure renderers ------------------------------------------------------------------------------

def render_scene(dataset: Any, index: int, tasks: str | None = None) -> Figure:
    """Sample `index` of `dataset`: its image and labels (figures.show_sample)."""
    sample = dataset[index]
    return show_sample(sample, tasks, class_names=getattr(dataset, "class_names", None),
                       palette=getattr(dataset, "palette", None),
                       title=f"scene {index} of {len(dataset)}: {sample.get('name', '')}")


def render_scene_grid(dataset: Any, indices: Sequence[int], tasks: str | None = None) -> Figure:
    """The static fallback of `scene_browser`: one row per scene index."""
    return show_samples([dataset[i] for i in indices], tasks, class_names=getattr(dataset, "class_names", None),
                        palette=getattr(dataset, "palette", None),
                        title=f"scenes {', '.join(map(str, indices))} of {len(dataset)}")


def render_severity_row(sample_at: Callable[[float], Sample], severities: Sequence[float] = (0.0, 0.5, 1.0),
                        title: str = "Target domain by severity") -> Figure:
    """The images of `sample_at(s)` for each severity s side by side (a severity slider's fallback)."""
    if not severities:
        raise FigureInputError("severities is empty; use e.g. (0.0, 0.5, 1.0)")
    figure = Figure(figsize=(2.8 * len(severities), 2.0), layout="constrained")
    axes = figure.subplots(1, len(severities), squeeze=False)[0]
    for ax, severity in zip(axes, severities):
        ax.imshow(image_to_rgb(sample_at(severity)["image"]))
        ax.set_title(f"severity {severity:g}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title, fontsize=10)
    return figure


# --- widget builders -----------------------------------------------------------------------------

def explorer(render_fn: Callable[..., Figure], controls: Mapping[str, widgets.ValueWidget]) -> widgets.VBox:
    """Controls above an Output showing `render_fn(**values)`, redrawn when a control is released."""
    def draw(**values: Any) -> None:
        display(render_fn(**values))

    output = widgets.interactive_output(draw, dict(controls))
    return widgets.VBox([widgets.HBox(list(controls.values())), output])


def scene_browser(dataset: Any, tasks: str | None = None, index: int = 0) -> widgets.VBox:
    """An index slider over `dataset`, drawing each scene's image and labels."""
    slider = widgets.IntSlider(value=index, min=0, max=len(dataset) - 1, description="scene",
                               continuous_update=False)
    return explorer(lambda index: render_scene(dataset, index, tasks), {"index": slider})


def severity_explorer(render_fn: Callable[[float], Figure], *, value: float = 0.5, step: float = 0.1,
                      minimum: float = 0.0, maximum: float = 1.0,
                      description: str = "severity") -> widgets.VBox:
    """A float slider (default: the domain-gap severity in [0, 1]) drawing `render_fn(value)`."""
    if not minimum <= value <= maximum:
        raise WidgetOptionError(f"value={value} must lie in [minimum={minimum}, maximum={maximum}]")
    slider = widgets.FloatSlider(value=value, min=minimum, max=maximum, step=step, description=description,
                                 continuous_update=False, readout_format=".2f")
    return explorer(lambda severity: render_fn(severity), {"severity": slider})
