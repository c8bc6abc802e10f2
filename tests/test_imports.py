"""The package's import graph: no cycle, and the layers import one way (tasks, config, trainer, adaptation).

The graph is read from the source with ast: every `import` and `from ... import` of a densemtl_lab
module, at module level or inside a function, except those under `if TYPE_CHECKING:` (annotations
only). `from package import name` counts as an import of the submodule when `name` is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import densemtl_lab

PACKAGE = Path(densemtl_lab.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("densemtl_lab", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(node: ast.AST, module: str) -> list[str]:
    """The densemtl_lab modules one import statement of `module` imports."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in MODULES]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: against the importing module's package
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return found if found or base not in MODULES else [base]


def _imports(module: str) -> set[str]:
    """Every densemtl_lab module that `module` imports (outside TYPE_CHECKING blocks)."""
    tree = ast.parse(MODULES[module].read_text())
    skipped = {id(child) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for statement in node.body for child in ast.walk(statement)}
    return {target for node in ast.walk(tree) if id(node) not in skipped
            for target in _imported(node, module) if target != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _reachable(start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for target in GRAPH[stack.pop()] - seen:
            seen.add(target)
            stack.append(target)
    return seen


def _cycle() -> list[str] | None:
    """One import cycle of the package as a path [a, b, ..., a], or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for target in sorted(GRAPH[module]):
            if found := visit(target, [*path, module]):
                return found
        done.add(module)
        return None

    return next((found for module in sorted(GRAPH) if (found := visit(module, []))), None)


def test_the_graph_is_read():
    assert {"densemtl_lab.tasks", "densemtl_lab.tasks.depth", "densemtl_lab.train", "densemtl_lab.uda"} <= set(GRAPH)
    assert "densemtl_lab.tasks.base" in GRAPH["densemtl_lab.tasks.depth"]
    assert "densemtl_lab.uda" in GRAPH["densemtl_lab.cli"]  # an import inside a function counts


def test_the_import_graph_has_no_cycle():
    cycle = _cycle()
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_adaptation_depends_on_the_trainer_never_the_reverse():
    assert "densemtl_lab.train" in GRAPH["densemtl_lab.uda"]
    assert "densemtl_lab.uda" not in _reachable("densemtl_lab.train")


def test_the_configuration_sits_below_the_data_and_the_models():
    assert GRAPH["densemtl_lab.config"] == {"densemtl_lab.tasks"}  # the registry, which stands on its own
    assert not {module for module in _reachable("densemtl_lab.config") if module.startswith("densemtl_lab.models")}
    assert "densemtl_lab.config" in GRAPH["densemtl_lab.data.build"]


@pytest.mark.parametrize("module", sorted(name for name in MODULES if name.startswith("densemtl_lab.tasks")))
def test_the_task_modules_are_the_ground_floor(module):
    allowed = ("densemtl_lab.tasks", "densemtl_lab.lazy", "densemtl_lab.data.classes")
    assert {target for target in _reachable(module) if not target.startswith(allowed)} == set()


#: docs/architecture.md's layers: a module imports only from its own layer or those below.
LAYERS = {
    1: ("tasks", "atomic", "lazy", "runtime", "machine", "data.classes"),
    2: ("config", "run_folder"),
    3: ("models", "data"),
    4: ("losses", "weighting", "metrics", "photometric"),
    5: ("train", "evaluation", "distributed", "checkpoint", "aggregation", "conflicts", "discriminator"),
    6: ("uda", "diagnostics", "step_cost", "viz"),
    7: ("cli", "notebook", "run", "report", "study", "__main__"),
}


def _layer(module: str) -> int:
    """The layer of a package module: the longest prefix LAYERS names (the package itself: 0)."""
    if module == "densemtl_lab":
        return 0
    name = module.removeprefix("densemtl_lab.")
    matches = [(len(prefix), layer) for layer, prefixes in LAYERS.items() for prefix in prefixes
               if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of docs/architecture.md; add it to LAYERS and the drawing"
    return max(matches)[1]


def test_every_import_goes_to_the_same_layer_or_below():
    upward = sorted(f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
                    for module, targets in GRAPH.items() for target in targets if _layer(target) > _layer(module))
    assert not upward, "imports going up a layer:\n" + "\n".join(upward)
