"""The task registry: the ground floor every other module asks about tasks.

DenseMTL (Lopes et al., WACV 2023) predicts up to four dense tasks: semantic segmentation (S),
depth (D), surface normals (N) and edges (E). Each is one object in its own module (`semseg.py`,
`depth.py`, `normals.py`, `edges.py`; the interface is `base.Task`) that owns everything about it:
label, channels, metrics, loss, meter, decoding, picture, discriminator input. `TASKS` maps names to
these objects in one canonical order (S, D, N, E), whatever order a user names them in, so
checkpoints and concatenations never depend on set iteration (a reference quirk).

`register_task(task)` adds a task after the built-in ones (and `unregister_task(name)` removes it):
the losses, metrics, trainer and visual tools then serve it without a change elsewhere. `TASK_ORDER`
stays the four built-in tasks, the labels the datasets produce.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

from densemtl_lab.tasks.base import (
    ColouriseError, LabelError, MetricSpec, PredictionError, Task, UnknownTaskError,
)
from densemtl_lab.tasks.depth import DEPTH, MAX_DEPTH_M, MIN_DEPTH_M, decode_depth, encode_depth
from densemtl_lab.tasks.edges import EDGES
from densemtl_lab.tasks.normals import NORMALS
from densemtl_lab.tasks.semseg import IGNORE_INDEX, SEMSEG

if TYPE_CHECKING:
    import torch

#: The name the task interface had before each task got its own module.
TaskSpec = Task

#: Every task by name, in canonical order: the built-in ones, then the registered ones.
TASKS: dict[str, Task] = {task.name: task for task in (SEMSEG, DEPTH, NORMALS, EDGES)}
#: The built-in tasks in canonical order (the labels the datasets produce).
TASK_ORDER: tuple[str, ...] = tuple(TASKS)

#: The reference's loss weights per task set (configs/*/resnet101_ours_*.yml).
_REFERENCE_WEIGHTS: dict[str, dict[str, float]] = {
    "SD": {"semseg": 50.0, "depth": 1.0},
    "SDN": {"semseg": 100.0, "depth": 1.0, "normals": 100.0},
    "SDNE": {"semseg": 100.0, "depth": 1.0, "normals": 100.0, "edges": 50.0},
}


#: The attributes `Task` declares without a default: every task sets them.
_REQUIRED = tuple(attribute for attribute in Task.__annotations__ if not hasattr(Task, attribute))


def register_task(task: Task) -> None:
    """Add `task` to the registry, after the tasks already there.

    It must set every attribute of `Task`; its name must be a new lower-case identifier of two or more
    characters and its letter a new capital letter, so that task sets stay unambiguous.
    """
    missing = [attribute for attribute in _REQUIRED if not hasattr(task, attribute)]
    if missing:
        raise ValueError(f"task {type(task).__name__} does not set {', '.join(missing)}; see "
                         "densemtl_lab.tasks.base.Task")
    name, letter = task.name, task.letter
    if not (name.isidentifier() and name.islower() and len(name) > 1):
        raise ValueError(f"task name {name!r} must be a lower-case identifier of two or more characters")
    if not (len(letter) == 1 and letter.isalpha() and letter.isupper()):
        raise ValueError(f"task letter {letter!r} of {name!r} must be one capital letter")
    if name in TASKS:
        raise ValueError(f"a task named {name!r} is registered already; choose another name")
    taken = {spec.letter: spec.name for spec in TASKS.values()}
    if letter in taken:
        raise ValueError(f"letter {letter!r} of task {name!r} is taken by task {taken[letter]!r}; "
                         "choose another letter")
    task.direction(task.main_metric)  # KeyError unless the main metric is one of its metrics
    TASKS[name] = task


def unregister_task(name: str) -> None:
    """Remove a task that `register_task` added (the built-in tasks stay)."""
    if name in TASK_ORDER:
        raise ValueError(f"{name!r} is a built-in task and cannot be unregistered")
    if name not in TASKS:
        raise UnknownTaskError(f"task {name!r} is not registered; registered: {', '.join(TASKS)}")
    del TASKS[name]


def get_task(name: str) -> Task:
    """The task object of `name`; UnknownTaskError names the known ones."""
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def parse_tasks(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Turn "SDN", "semseg,depth" or ["depth", "semseg"] into task names in canonical order."""
    if isinstance(spec, str):
        text = spec.strip()
        if "," in text or text.lower() in TASKS:
            items = [part.strip().lower() for part in text.split(",") if part.strip()]
        else:
            items = list(text.upper())
    else:
        items = [str(part) for part in spec]
    by_letter = {task.letter: name for name, task in TASKS.items()}
    names = []
    for item in items:
        name = by_letter.get(item.upper(), item.lower()) if len(item) == 1 else item.lower()
        if name not in TASKS:
            raise UnknownTaskError(
                f"unknown task {item!r} in tasks={spec!r}; use letters {', '.join(by_letter)} or the names "
                f"{', '.join(TASKS)}"
            )
        if name in names:
            raise UnknownTaskError(f"task {name!r} is named twice in tasks={spec!r}")
        names.append(name)
    if not names:
        raise UnknownTaskError(f"tasks={spec!r} names no task; use e.g. 'SDN'")
    return tuple(name for name in TASKS if name in names)


def task_letters(tasks: Iterable[str]) -> str:
    """The short name of a task set, e.g. ("semseg", "depth") -> "SD"."""
    return "".join(TASKS[name].letter for name in parse_tasks(tasks))


def default_weights(tasks: Iterable[str]) -> dict[str, float]:
    """The reference loss weights for a task set.

    SD, SDN and SDNE take the reference values. A single task gets 1. Any other subset takes
    its tasks' weights from the smallest reference set that contains them (e.g. DN from SDN); a task
    that no reference set holds (a registered one) gets 1.
    """
    names = parse_tasks(tasks)
    if len(names) == 1:
        return {names[0]: 1.0}
    referenced = [name for name in names if name in _REFERENCE_WEIGHTS["SDNE"]]
    table = next(table for table in _REFERENCE_WEIGHTS.values() if all(name in table for name in referenced))
    return {name: table.get(name, 1.0) for name in names}


def decode_prediction(task: str, raw: torch.Tensor) -> torch.Tensor:
    """A raw head output [B, C, H, W] -> the prediction in the label's units (`Task.decode`).

    semseg: class ids [B, H, W]; depth: metres [B, 1, H, W]; normals: unit vectors [B, 3, H, W];
    edges: edge probability [B, 1, H, W].
    """
    return get_task(task).decode(raw)


def main_metrics(tasks: Iterable[str]) -> Mapping[str, str]:
    """Task -> its main metric (the one delta_m uses)."""
    return {name: TASKS[name].main_metric for name in parse_tasks(tasks)}


__all__ = [
    "IGNORE_INDEX", "MAX_DEPTH_M", "MIN_DEPTH_M", "TASKS", "TASK_ORDER", "ColouriseError", "LabelError",
    "MetricSpec", "PredictionError", "Task", "TaskSpec", "UnknownTaskError", "decode_depth",
    "decode_prediction", "default_weights", "encode_depth", "get_task", "main_metrics", "parse_tasks",
    "register_task", "task_letters", "unregister_task",
]
