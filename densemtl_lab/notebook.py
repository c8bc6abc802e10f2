"""What the lesson notebooks share: parameter checks, train-or-load, figures and metrics files.

A notebook starts with a cell tagged `parameters` whose values default to environment variables
(`DENSEMTL_PROFILE`, `DENSEMTL_DEVICE`, `DENSEMTL_SEED`, `DENSEMTL_DATA_ROOT`, `DENSEMTL_OUTPUT_DIR`),
so papermill can inject values and nbval/CI can switch the whole suite to the `smoke` profile. The
next cell calls `start(...)`, which checks them and stops the notebook with a one-line message when
one is wrong. Everything a notebook writes goes to `OUTPUT_DIR`:

    OUTPUT_DIR/runs/<profile>-<model>-<tasks>[-<tag>]-s<seed>/   training runs (shared by notebooks)
    OUTPUT_DIR/baselines.json                                    single-task baselines (notebook 02)
    OUTPUT_DIR/<notebook>/metrics.json                           the notebook's key numbers
    OUTPUT_DIR/<notebook>/figures/*.png, *.plotly.html           figures for the batch report

Committed notebooks keep only the outputs of cells that start with `# NBVAL_CHECK_OUTPUT`
(deterministic facts: shapes, counts, configuration); `tests/nbtools.py` strips the rest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from densemtl_lab import uda  # noqa: F401  (registers the adaptation methods with the trainer)
from densemtl_lab.atomic import atomic_path, write_json_atomic, write_text_atomic
from densemtl_lab.checkpoint import CheckpointManager
from densemtl_lab.config import ConfigError, ExperimentConfig, get_profile
from densemtl_lab.data.build import build_dataset
from densemtl_lab.metrics import load_baselines, save_baseline
from densemtl_lab.run_folder import default_run_dir, run_is_complete
from densemtl_lab.runtime import select_device, tune_cpu_allocator
from densemtl_lab.tasks import TASKS, parse_tasks, task_letters
from densemtl_lab.train import History, Trainer, check_resumable, load_trained_model

#: Environment variables that the parameters cells read, with their defaults.
ENVIRONMENT_DEFAULTS = {
    "DENSEMTL_PROFILE": "quick",
    "DENSEMTL_DEVICE": "auto",
    "DENSEMTL_SEED": "0",
    "DENSEMTL_DATA_ROOT": "",
    "DENSEMTL_OUTPUT_DIR": "../outputs",
}


class NotebookError(ValueError):
    """A bad notebook parameter; shown in the notebook as one line, without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for custom error display
        return [f"NotebookError: {self}"]


def parameter(name: str) -> str:
    """The value of a DENSEMTL_* environment variable, or its default (for parameters cells)."""
    return os.environ.get(name, ENVIRONMENT_DEFAULTS[name])


def widgets_available() -> bool:
    """Whether a widget front end will draw ipywidgets (JupyterLab), as opposed to papermill or nbval.

    Jupyter Server names the session of every kernel it starts (JPY_SESSION_NAME); headless
    executors do not. DENSEMTL_WIDGETS=0/1 forces the answer.
    """
    forced = os.environ.get("DENSEMTL_WIDGETS")
    if forced in ("0", "1"):
        return forced == "1"
    return "JPY_SESSION_NAME" in os.environ


@dataclass
class Trained:
    """A trained model with what its run left on disk."""

    model: nn.Module
    config: ExperimentConfig
    history: History
    metrics: dict[str, Any]
    run_dir: Path
    trained_now: bool
    seconds: float
    step: int


class Lab:
    """One notebook's session: its profile, device, output folders, and train-or-load."""

    def __init__(self, notebook: str, profile: ExperimentConfig, device: torch.device, seed: int,
                 output_dir: Path) -> None:
        self.notebook = notebook
        self.profile = profile
        self.device = device
        self.seed = seed
        self.output_dir = output_dir
        self.out = output_dir / notebook
        self.figures = self.out / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)

    @property
    def name(self) -> str:
        """The profile's name (smoke, quick, ...)."""
        return self.profile.profile

    def config(self, model: str = "densemtl", tasks: str = "SDN", **overrides: Any) -> ExperimentConfig:
        """The profile's experiment for `model` on `tasks`, with keyword overrides (steps=..., ...)."""
        chosen = {"model": {"name": model, "tasks": task_letters(parse_tasks(tasks))}}
        return get_profile(self.name, **{**self._base_overrides(), **chosen, **overrides})

    def _base_overrides(self) -> dict[str, Any]:
        return {"seed": self.seed, "device": str(self.device), "root": self.profile.data.root}

    def dataset(self, split: str = "val", domain: str | None = None, **data_overrides: Any):
        """The profile's dataset of `split` (toy scenes unless DATA_ROOT names real data)."""
        data = dataclasses.replace(self.profile.data, **data_overrides)
        return build_dataset(data, split, domain)

    def run_dir(self, config: ExperimentConfig, tag: str | None = None) -> Path:
        """Where the run of `config` lives: shared by every notebook of this OUTPUT_DIR."""
        return default_run_dir(config, self.output_dir / "runs", tag)

    def train_or_load(self, model: str = "densemtl", tasks: str = "SDN", tag: str | None = None,
                      until_step: int | None = None, **overrides: Any) -> Trained:
        """Load the finished run of this model from OUTPUT_DIR, or train it (resuming a partial run).

        `until_step` pauses the training at that step (checkpointed); call again without it to finish.
        """
        config = self.config(model, tasks, **overrides)
        run_dir = self.run_dir(config, tag)
        started = time.perf_counter()
        if run_is_complete(run_dir, config.train.steps):
            check_resumable(run_dir, config)  # a finished run of other settings is not this one
            network, config, _ = load_trained_model(CheckpointManager(run_dir / "checkpoints").latest(), self.device)
            history = History.from_dict(json.loads((run_dir / "history.json").read_text()))
            metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
            return Trained(network, config, history, metrics, run_dir, False, time.perf_counter() - started,
                           config.train.steps)
        result = Trainer(config, run_dir, resume=True).fit(until=until_step)
        result.model.eval()
        return Trained(result.model, config, result.history, result.metrics, run_dir, True,
                       time.perf_counter() - started, result.step)

    # -- single-task baselines (delta_m) ----------------------------------------------------------
    @property
    def baselines_file(self) -> Path:
        """The baselines file that notebook 02 fills and later notebooks read."""
        return self.output_dir / "baselines.json"

    def baseline_setting(self) -> str:
        """The baselines.json setting of this profile and seed, e.g. "toy-quick-s0"."""
        return f"{self.profile.data.dataset}-{self.name}-s{self.seed}"

    def store_baseline(self, task: str, trained: Trained) -> None:
        """Record a single-task model's metrics as the baseline of `task`."""
        save_baseline(self.baselines_file, self.baseline_setting(), task, trained.metrics[task],
                      {"seeds": [self.seed], "commit": "", "config": trained.config.to_dict()})

    def baselines(self, tasks: str = "SDNE") -> dict[str, float]:
        """The single-task baselines of `tasks`; trains the missing single-task models first."""
        names = parse_tasks(tasks)
        try:
            stored = dict(load_baselines(self.baselines_file, self.baseline_setting()))
        except ValueError:
            stored = {}
        for task in names:
            if task not in stored:
                self.store_baseline(task, self.train_or_load("stl", TASKS[task].letter))
        return {task: value for task, value in
                load_baselines(self.baselines_file, self.baseline_setting()).items() if task in names}

    # -- outputs -------------------------------------------------------------------------------------
    def save_figure(self, figure: Any, name: str) -> Path:
        """Save a matplotlib figure (PNG) or a plotly figure (HTML fragment) for the batch report."""
        if hasattr(figure, "savefig"):
            path = self.figures / f"{name}.png"
            with atomic_path(path) as temporary:
                figure.savefig(temporary, format="png", dpi=90, bbox_inches="tight")
            return path
        html = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}")
        return write_text_atomic(self.figures / f"{name}.plotly.html", html)

    def write_metrics(self, values: dict[str, Any]) -> Path:
        """Merge `values` into this notebook's metrics.json (written atomically)."""
        path = self.out / "metrics.json"
        current = json.loads(path.read_text()) if path.is_file() else {}
        current.update(values)
        current["profile"] = self.name
        return write_json_atomic(path, current)

    def describe(self) -> str:
        """A one-line, deterministic summary of the profile (safe for nbval-checked cells)."""
        data, model, train = self.profile.data, self.profile.model, self.profile.train
        return (f"profile {self.name}: {data.dataset} {data.size[0]}x{data.size[1]}, {model.backbone}, "
                f"decoder widths {list(model.decoder_widths)}, {train.steps} steps of batch "
                f"{train.batch_size}")


def show_figures_inline() -> None:
    """Display a matplotlib Figure that ends a cell as a PNG, whatever the backend (MPLBACKEND=Agg too).

    The figure helpers build `Figure` objects without pyplot, so IPython's inline backend never
    registers them; this registers the PNG formatter for them. Outside IPython it does nothing.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        select_figure_formats(shell, {"png"}, bbox_inches="tight")


def start(notebook: str, *, profile: str, device: str = "auto", seed: int | str = 0,
          data_root: str | None = None, output_dir: str | None = None) -> Lab:
    """Check a notebook's parameters and open its session; a bad value stops with one line."""
    try:
        config = get_profile(profile)
    except ConfigError as error:
        raise NotebookError(f"PROFILE: {error}") from None
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise NotebookError(f"SEED={seed!r} must be a whole number, e.g. SEED = 0") from None
    if data_root:
        if not Path(data_root).expanduser().is_dir():
            raise NotebookError(f"DATA_ROOT={data_root!r} is not a folder; give the folder of your "
                                f"dataset or leave DATA_ROOT empty for the toy scenes")
        config = get_profile(profile, root=str(Path(data_root).expanduser()))
    elif config.data.dataset != "toy":
        raise NotebookError(f"PROFILE={profile!r} reads {config.data.dataset} from DATA_ROOT, which is "
                            f"empty; set DATA_ROOT to the dataset's folder")
    try:
        chosen = select_device(device)
    except ValueError as error:
        raise NotebookError(f"DEVICE: {error}") from None
    torch.manual_seed(seed)
    if chosen.type == "cpu":
        tune_cpu_allocator()  # the lessons' models allocate the same large buffers every step: keep them mapped
    show_figures_inline()
    folder = Path(output_dir or ENVIRONMENT_DEFAULTS["DENSEMTL_OUTPUT_DIR"]).expanduser()
    return Lab(notebook, config, chosen, seed, folder.resolve())
