"""Keeping the committed notebooks clean: execute them in the smoke profile, keep only checked outputs.

The committed notebooks store the outputs of deterministic cells only (those whose first line is
`# NBVAL_CHECK_OUTPUT`: shapes, parameter counts, dataset statistics), so that nbval can compare them
on every change (`pytest --nbval-lax`), and nothing else: no images, no training logs. A maintainers'
tool, run from a checkout (default: notebooks/*.ipynb of the current folder):

    python tests/nbtools.py refresh [NOTEBOOK...]   re-execute with DENSEMTL_PROFILE=smoke, write back stripped
    python tests/nbtools.py check [NOTEBOOK...]     list what they store that they should not (exit 1)

`committed_problems` is what the test suite enforces. Exit statuses are densemtl-lab's: 2 for a
missing notebook, 130 for Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import nbformat

from densemtl_lab.atomic import write_text_atomic
from densemtl_lab.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
_KEPT_MIME = ("text/plain",)
EXIT_PROBLEMS = 1


def is_checked(cell: nbformat.NotebookNode) -> bool:
    """Whether nbval compares this cell's stored output (`# NBVAL_CHECK_OUTPUT` on its first line)."""
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK_MARKER)


def _text_only(output: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    if output.output_type == "stream":
        return output if output.name == "stdout" else None
    if output.output_type in ("execute_result", "display_data"):
        data = {key: value for key, value in output.data.items() if key in _KEPT_MIME}
        if not data:
            return None
        output.data = data
        output.metadata = {}
        return output
    return None


def strip_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Keep the text outputs of checked cells; clear every other output and execution count."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if is_checked(cell):
            cell.outputs = [kept for kept in map(_text_only, cell.outputs) if kept is not None]
        else:
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("widgets", None)
    notebook.metadata.pop("papermill", None)
    return notebook


def committed_problems(notebook: nbformat.NotebookNode, name: str) -> list[str]:
    """What a committed notebook stores that it should not (empty when clean)."""
    problems = []
    if not any("parameters" in cell.metadata.get("tags", []) for cell in notebook.cells):
        problems.append(f"{name}: no cell is tagged 'parameters'")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not cell.get("outputs"):
            continue
        if not is_checked(cell):
            problems.append(f"{name} cell {index}: stores outputs but is not a {CHECK_MARKER} cell")
        for output in cell.outputs:
            kinds = set(output.get("data", {})) - set(_KEPT_MIME)
            if kinds or output.output_type == "error" or output.get("name") == "stderr":
                problems.append(f"{name} cell {index}: stores a {output.output_type} output "
                                f"({', '.join(sorted(kinds)) or output.get('name', '')})")
    return problems


def refresh(paths: Iterable[Path], timeout: int = 600) -> None:
    """Execute each notebook in the smoke profile (in its own folder) and write it back stripped."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory() as scratch:
        environment = {"DENSEMTL_PROFILE": "smoke", "DENSEMTL_OUTPUT_DIR": scratch,
                       "DENSEMTL_WIDGETS": "0", "MPLBACKEND": "Agg"}
        saved = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)
        try:
            for path in paths:
                notebook = nbformat.read(path, as_version=4)
                NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                               resources={"metadata": {"path": str(path.parent)}}).execute()
                text = nbformat.writes(strip_notebook(notebook))
                write_text_atomic(path, text if text.endswith("\n") else text + "\n")
                print(f"refreshed {path}")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def notebook_paths(paths: list[Path]) -> list[Path]:
    """The given notebooks (each must exist), or notebooks/*.ipynb of the current folder."""
    if not paths:
        paths = sorted(Path("notebooks").glob("*.ipynb"))
        if not paths:
            raise FileNotFoundError("no notebooks/*.ipynb here; run from the repository root or name "
                                    "the notebooks")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"notebook {path} does not exist")
    return paths


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbtools", description="refresh or check the committed lesson notebooks")
    parser.add_argument("action", choices=("refresh", "check"),
                        help="refresh: execute in the smoke profile and keep only checked outputs; "
                             "check: list what committed notebooks store that they should not")
    parser.add_argument("paths", type=Path, nargs="*", metavar="NOTEBOOK",
                        help="notebooks (default: notebooks/*.ipynb of the current folder)")
    return parser


def _run(action: str, paths: list[Path]) -> int:
    paths = notebook_paths(paths)
    if action == "refresh":
        refresh(paths)
        return 0
    problems = [problem for path in paths
                for problem in committed_problems(nbformat.read(path, as_version=4), path.name)]
    print("\n".join(problems) if problems else f"{len(paths)} notebooks clean")
    return EXIT_PROBLEMS if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Refresh or check notebooks; returns the exit status (an error you can fix: one line, 2)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args.action, args.paths)
    except (ValueError, OSError) as error:
        print(f"nbtools: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("nbtools: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
