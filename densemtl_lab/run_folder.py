"""Run folders: where a run lives and whether it finished (read by the trainer, the lessons and the studies).

Torch-free, so that a study can list what is complete without starting torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from densemtl_lab.config import ExperimentConfig


def default_run_dir(config: ExperimentConfig, root: str | Path = "runs", tag: str | None = None) -> Path:
    """runs/<profile>-<model>-<tasks>[-<tag>]-s<seed>; the tag defaults to adapt.method where one is set."""
    tag = tag or (None if config.adapt.method == "none" else config.adapt.method)
    label = f"{config.profile}-{config.model.name}-{config.model.tasks}" + (f"-{tag}" if tag else "")
    return Path(root) / f"{label}-s{config.train.seed}"


def run_is_complete(run_dir: Path, steps: int) -> bool:
    """Whether `run_dir` holds a finished, uninterrupted run of `steps` steps (its metrics.json says so)."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return record.get("step") == steps and not record.get("interrupted") and bool(record.get("metrics"))
