"""Modules imported on first use, so that the task registry loads without torch.

`densemtl_lab.tasks` is the ground floor: configurations and the command line read it (task letters,
metrics, main metrics) and must start without importing torch (tests/test_cli.py checks it). Its
task modules use torch, numpy, OpenCV and matplotlib inside their functions only; they name them as

    if TYPE_CHECKING:
        import torch
    else:
        torch = lazy_module("torch")

and the real module is imported the first time one of its attributes is read. (Not
`importlib.util.LazyLoader`: finding the spec of a submodule such as "torch.nn.functional" imports its
parent packages, torch itself, which is what this module exists to avoid.)
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands for module `name` and imports it when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """A stand-in for module `name` (e.g. "torch.nn.functional") that imports it on first use."""
    return LazyModule(name)
