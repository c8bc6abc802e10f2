"""Figures of domain adaptation (notebook 06): what the discriminators read, and the gap by severity.

Both return a titled `matplotlib.figure.Figure` (save it with `Lab.save_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure

from densemtl_lab.viz.figures import FigureInputError, image_to_rgb


def discriminator_inputs_figure(images: torch.Tensor, maps: Mapping[str, torch.Tensor], *, title: str,
                                row_names: Sequence[str] = ("source", "target")) -> Figure:
    """One row per image: the image, then each task's discriminator input (`uda.discriminator_inputs`).

    A map of several channels is summed over them (semseg's self-information sums to the entropy of
    its class probabilities); every map is drawn on [0, 1], the discriminators' input range (depth's
    range is the source's: target values beyond it are clipped for the display), with its mean.
    """
    if len(images) != len(row_names):
        raise FigureInputError(f"{len(images)} images but {len(row_names)} row names; pass one name per image")
    figure = Figure(figsize=(3.4 * (len(maps) + 1), 1.8 * len(images)), layout="constrained")
    for row, axes in enumerate(figure.subplots(len(images), len(maps) + 1, squeeze=False)):
        axes[0].imshow(image_to_rgb(images[row]))
        axes[0].set_title(f"{row_names[row]} image", fontsize=8)
        for ax, (task, task_maps) in zip(axes[1:], maps.items()):
            channels = task_maps.shape[1]
            shown = task_maps[row].sum(0).float().cpu()
            summed = f", sum of {channels} channels" if channels > 1 else ""
            drawn = ax.imshow(shown.clamp(0, 1).numpy(), cmap="magma", vmin=0, vmax=1)
            figure.colorbar(drawn, ax=ax, shrink=0.8)
            ax.set_title(f"{task} input{summed}: mean {shown.mean():.2f}", fontsize=8)
        for ax in axes:
            ax.set(xticks=[], yticks=[])
    figure.suptitle(title)
    return figure


def metric_by_severity_figure(by_severity: Mapping[float, float], source_value: float, *, metric: str,
                              title: str) -> Figure:
    """A metric on the target at each severity (line) against the same network on the source (dashed)."""
    figure = Figure(figsize=(5, 3), layout="constrained")
    ax = figure.subplots()
    ax.plot(list(by_severity), list(by_severity.values()), marker="o", label="target")
    ax.axhline(source_value, color="grey", linestyle="--", label="source")
    ax.set(xlabel="target severity s", ylabel=metric, title=title)
    ax.legend()
    return figure
