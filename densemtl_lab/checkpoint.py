"""Checkpoints: atomic writes, safe reads, strict model loading, and which files a run keeps.

A checkpoint is a dict of tensors and plain containers only, so it loads with
`torch.load(weights_only=True)` and never runs code from the file. It is written atomically (a temporary
file beside it, fsync, rename): a crash or SIGKILL leaves the previous checkpoint intact. Loading a
state into a model that it does not fit raises an error listing the missing, unexpected and
shape-mismatched keys; the reference's `strict=False` load, which passed mismatches silently
(the official `training/weights.py`), is not reproduced.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from densemtl_lab.atomic import write_bytes_atomic, write_json_atomic
from densemtl_lab.tasks import TASKS

#: Version of the checkpoint layout; bump it when a key changes meaning.
FORMAT_VERSION = 1
#: Keys every checkpoint holds.
REQUIRED_KEYS = ("format", "step", "tasks", "config", "model")
_STEP_FILE = re.compile(r"^step_(\d+)\.pt$")
#: What torch's weights-only unpickler found, inside its longer message.
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNPICKLER_FINDING = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", re.DOTALL)
_SHOWN_KEYS = 8


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or used."""


class ModelMismatchError(CheckpointError):
    """A model state that does not fit the model it is loaded into."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str],
                 mismatched: list[str]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = [f"{label} ({len(keys)}): {_shorten(keys)}"
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", mismatched)) if keys]
        super().__init__(f"{source} does not fit the model: {'; '.join(parts)}; build the model "
                         "with the checkpoint's config (model name, tasks, backbone, widths, classes)")


def _load_error(source: Path, error: BaseException) -> CheckpointError:
    """A one-line CheckpointError for a failed weights-only load.

    torch's own message advises retrying with the unsafe loader; it is never quoted, only its finding.
    """
    message = str(error)
    unsafe = _UNSAFE_GLOBAL.search(message)
    if unsafe:
        return CheckpointError(f"checkpoint {source} holds a Python object ({unsafe.group(1)}) that a "
                               "weights-only load refuses, so densemtl-lab did not write it; pass a "
                               "checkpoint from a densemtl-lab run")
    finding = _UNPICKLER_FINDING.search(message)
    reason = " ".join(finding.group(1).split()) if finding else _first_sentence(message)
    return CheckpointError(f"checkpoint {source} is corrupt or truncated "
                           f"({reason[:200] or type(error).__name__}); delete it and use an earlier checkpoint")


def _first_sentence(message: str) -> str:
    """The first sentence of an error message, or "" when it gives loading advice."""
    sentence = re.split(r"(?<=\.)\s", " ".join(message.split()), maxsplit=1)[0].rstrip(".")
    return "" if "weights_only" in sentence or "loaded" in sentence else sentence


def _shorten(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write `state` atomically to `path` (whole or not at all)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (weights only); a missing, corrupt or foreign file -> CheckpointError."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"checkpoint {source} does not exist; check the path "
                              "(run folders keep theirs in checkpoints/)")
    try:
        state = torch.load(source, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, KeyError) as error:
        raise _load_error(source, error) from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{source} is not a densemtl-lab checkpoint (no {', '.join(missing)}); "
                              "pass a file written by densemtl-lab train")
    if state["format"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {source} has format {state['format']}, newer than this "
                              f"densemtl-lab ({FORMAT_VERSION}); upgrade densemtl-lab")
    return state


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor],
                     source: str = "checkpoint") -> None:
    """Strictly load `state` into `model`; any mismatch raises ModelMismatchError listing the keys."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [f"{key} {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
                  for key in own if key in state and state[key].shape != own[key].shape]
    if missing or unexpected or mismatched:
        raise ModelMismatchError(source, missing, unexpected, mismatched)
    model.load_state_dict(state, strict=True)


# --- random number generators ---------------------------------------------------------------------

def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states as tensors and plain values."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """The inverse of `capture_rng`."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the files of one run -------------------------------------------------------------------------

def metric_direction(metric: str) -> int:
    """+1 when higher is better for "task/metric" or "delta_m", -1 when lower is better."""
    if metric == "delta_m":
        return 1
    task, _, name = metric.partition("/")
    if task not in TASKS:
        raise CheckpointError(f"best metric {metric!r} must be 'delta_m' or 'task/metric'")
    return TASKS[task].direction(name)


class CheckpointManager:
    """The checkpoints of one run: `step_XXXXXXX.pt` (the last `keep_last`) and `best.pt`.

    `best.pt` holds the model weights and metadata (no optimiser: it is for evaluation and
    prediction) and, under "best", which step it is and its metric value; `best.json` repeats that
    record for people and scripts. The two are separate writes, so a kill between them can leave an old
    `best.json` beside a new `best.pt`: opening the folder again rewrites `best.json` from `best.pt`.
    """

    def __init__(self, folder: str | Path, keep_last: int = 1, best_metric: str | None = None) -> None:
        if keep_last < 1:
            raise CheckpointError(f"keep_last={keep_last} must be >= 1")
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.direction = metric_direction(best_metric) if best_metric else 1
        for leftover in self.folder.glob(".*.tmp"):  # a write cut short by a kill
            leftover.unlink(missing_ok=True)
        self._reconcile_best_record()

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def step_paths(self) -> list[Path]:
        """The periodic checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = [(int(match.group(1)), path) for path in self.folder.iterdir()
                 if (match := _STEP_FILE.match(path.name))]
        return [path for _, path in sorted(found)]

    def latest(self) -> Path | None:
        """The newest periodic checkpoint, if any."""
        paths = self.step_paths()
        return paths[-1] if paths else None

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        """Write the checkpoint of `step` and delete periodic ones beyond the last `keep_last`."""
        path = save_checkpoint(state, self.folder / f"step_{step:07d}.pt")
        for old in self.step_paths()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    @property
    def best_record_path(self) -> Path:
        return self.folder / "best.json"

    def best_record(self) -> dict[str, Any] | None:
        """{"metric", "value", "step"} of the current best checkpoint, if any."""
        if not (self.best_record_path.is_file() and self.best_path.is_file()):
            return None
        return json.loads(self.best_record_path.read_text())

    def _reconcile_best_record(self) -> None:
        """Make `best.json` say what `best.pt` holds (`best.pt` is written first; see the class doc)."""
        if not self.best_path.is_file():
            return
        # mmap reads the record without reading the weights; a damaged best.pt is left for its reader.
        try:
            record = torch.load(self.best_path, map_location="cpu", weights_only=True, mmap=True).get("best")
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError, AttributeError):
            return
        stored = json.loads(self.best_record_path.read_text()) if self.best_record_path.is_file() else None
        if record is not None and stored != record:
            write_json_atomic(self.best_record_path, record)

    def is_better(self, value: float) -> bool:
        """Whether `value` of the best metric beats the recorded best."""
        record = self.best_record()
        if value != value:  # NaN never wins
            return False
        return record is None or record["value"] is None or (value - record["value"]) * self.direction > 0

    def save_best(self, state: Mapping[str, Any], value: float, step: int) -> Path:
        """Write `best.pt` (with its record inside), then `best.json`."""
        record = {"metric": self.best_metric, "value": value, "step": step}
        path = save_checkpoint({**state, "best": record}, self.best_path)
        write_json_atomic(self.best_record_path, record)
        return path
