"""Figures of depth learnt from video (lesson 09): frame triplets, warped neighbours and their errors, the
scale ambiguity, the auto-mask.

The computations are `densemtl_lab.photometric`'s (`view_synthesis`, `photometric_loss`); these functions
only draw. Every function returns a titled `matplotlib.figure.Figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from densemtl_lab.viz.figures import PANEL_INCHES, FigureInputError, image_to_rgb

#: The colour map and upper end of the photometric error maps (0.85 (1 - SSIM) / 2 + 0.15 L1 lies in [0, 1]).
_ERROR_MAP, _ERROR_MAX = "inferno", 0.3


def _frame_name(frame: int) -> str:
    return "frame 0" if frame == 0 else f"frame {frame:+d}"


def sequence_figure(image: torch.Tensor, sources: torch.Tensor, frame_ids: Sequence[int], *,
                    title: str = "One toy sequence: the frames around a training image") -> Figure:
    """Frames in temporal order: frame 0 (`image` [3, H, W]) between its neighbours (`sources` [S, 3, H, W])."""
    frames = {0: image, **{int(frame): sources[i] for i, frame in enumerate(frame_ids)}}
    figure = Figure(figsize=(PANEL_INCHES * len(frames), PANEL_INCHES * 0.65), layout="constrained")
    for ax, frame in zip(figure.subplots(1, len(frames), squeeze=False)[0], sorted(frames)):
        ax.imshow(image_to_rgb(frames[frame]))
        ax.set_title(_frame_name(frame), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title)
    return figure


def view_synthesis_figure(image: torch.Tensor, rows: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                          frame_ids: Sequence[int], *, title: str = "View synthesis: neighbours warped into frame 0"
                          ) -> Figure:
    """One row per geometry: {label: (warped [S, 3, H, W], errors [S, H, W])}; frame 0 first, then for each
    source its warped image and its photometric error map (one colour scale for all, with its bar)."""
    if not rows:
        raise FigureInputError("rows is empty: give {label: (warped, errors)} for at least one geometry")
    columns = 1 + 2 * len(frame_ids)
    figure = Figure(figsize=(PANEL_INCHES * columns * 0.8, PANEL_INCHES * 0.6 * len(rows) + 0.6),
                    layout="constrained")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    shown = None
    for line, (label, (warped, errors)) in zip(axes, rows.items()):
        line[0].imshow(image_to_rgb(image))
        line[0].set_ylabel(label, fontsize=8)
        for i, frame in enumerate(frame_ids):
            line[1 + 2 * i].imshow(image_to_rgb(warped[i]))
            shown = line[2 + 2 * i].imshow(errors[i].detach().float().cpu().numpy(), cmap=_ERROR_MAP,
                                           vmin=0, vmax=_ERROR_MAX)
            line[2 + 2 * i].set_xlabel(f"mean error {float(errors[i].mean()):.3f}", fontsize=8)
        for ax in line:
            ax.set_xticks([])
            ax.set_yticks([])
    titles = ["frame 0 (target)"] + [text for frame in frame_ids
                                     for text in (f"{_frame_name(frame)} warped into 0", "photometric error")]
    for ax, text in zip(axes[0], titles):
        ax.set_title(text, fontsize=8)
    figure.colorbar(shown, ax=axes[:, -1], shrink=0.8, label="0.85 (1 - SSIM)/2 + 0.15 L1")
    figure.suptitle(title)
    return figure


def scale_ambiguity_figure(factors: Sequence[float], curves: Mapping[str, Sequence[float]], *,
                           title: str = "The photometric error when the geometry is scaled") -> Figure:
    """Mean photometric error against a scale factor k, one line per way of scaling ({label: errors})."""
    figure = Figure(figsize=(6.5, 3.4), layout="constrained")
    ax = figure.subplots()
    for label, errors in curves.items():
        if len(errors) != len(factors):
            raise FigureInputError(f"curve {label!r} has {len(errors)} values for {len(factors)} factors")
        ax.plot(factors, errors, marker="o", label=label)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("scale factor k (log scale; 1 = the true geometry)")
    ax.set_ylabel("mean photometric error")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return figure


def automask_figure(image: torch.Tensor, automask: torch.Tensor, static: torch.Tensor | None = None, *,
                    title: str = "The auto-mask: pixels the loss learns from (white)") -> Figure:
    """Frame 0 and its auto-mask [H, W] (1: a warped source beat the unwarped ones), and optionally the mask
    of the same frame seen by a camera that did not move (`static`)."""
    masks: dict[str, Any] = {"moving camera": automask}
    if static is not None:
        masks["camera standing still"] = static
    figure = Figure(figsize=(PANEL_INCHES * (1 + len(masks)), PANEL_INCHES * 0.65), layout="constrained")
    axes = figure.subplots(1, 1 + len(masks), squeeze=False)[0]
    axes[0].imshow(image_to_rgb(image))
    axes[0].set_title("frame 0", fontsize=9)
    for ax, (label, mask) in zip(axes[1:], masks.items()):
        values = np.asarray(mask.detach().float().cpu())
        ax.imshow(values, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{label}: {100 * values.mean():.0f} % kept", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title)
    return figure
