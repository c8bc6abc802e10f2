"""The batch runner: execute the lesson notebooks headless with papermill and write a report.

`densemtl-lab run [--profile P] [--only 03,04] [-p key=value ...]` runs `notebooks/NN_*.ipynb` in
order into a new run folder:

    runs/suite-<profile>-<timestamp>/
        notebooks/NN_name.ipynb     executed copies (with all outputs)
        outputs/                    what the notebooks write (checkpoints, metrics.json, figures)
        summary.json                per notebook: status, seconds, error; the collected metrics
        report.html                 the results table, every notebook's key numbers and figures

Every notebook receives the same parameters (PROFILE, SEED, DEVICE, DATA_ROOT, OUTPUT_DIR), so later
lessons find the checkpoints that earlier ones wrote in OUTPUT_DIR. A failing notebook is named and
the run goes on; the exit status is non-zero when any notebook failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from densemtl_lab.report import write_report

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")


class RunnerError(ValueError):
    """A batch-run request that cannot be carried out (bad folder, bad selection, bad parameter)."""


@dataclass
class NotebookResult:
    """What happened to one notebook of a batch run."""

    name: str
    status: str  # "ok" or "failed"
    seconds: float
    executed: str
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def discover_notebooks(folder: Path) -> list[Path]:
    """The numbered lesson notebooks of `folder`, in lesson order."""
    if not folder.is_dir():
        raise RunnerError(f"notebook folder {folder} does not exist; run from the repository root "
                          "or pass --notebooks PATH")
    notebooks = sorted(path for path in folder.iterdir() if NOTEBOOK_PATTERN.match(path.name))
    if not notebooks:
        raise RunnerError(f"notebook folder {folder} holds no numbered notebooks (NN_name.ipynb); pass "
                          "--notebooks with the lessons' folder")
    return notebooks


def select_notebooks(notebooks: list[Path], only: str | None) -> list[Path]:
    """Keep the notebooks whose two-digit numbers are listed in `only` ("03,04"); all when None."""
    if not only:
        return notebooks
    wanted = [part.strip().zfill(2) for part in only.split(",") if part.strip()]
    by_number = {NOTEBOOK_PATTERN.match(path.name).group(1): path for path in notebooks}
    unknown = [number for number in wanted if number not in by_number]
    if unknown:
        raise RunnerError(f"--only {only}: no notebook numbered {', '.join(unknown)}; "
                          f"available: {', '.join(sorted(by_number))}")
    return [by_number[number] for number in sorted(set(wanted))]


def parse_parameters(pairs: list[str]) -> dict[str, Any]:
    """`["EPOCHS=3", "NAME=x"]` -> {"EPOCHS": 3, "NAME": "x"}; values are JSON literals or strings."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise RunnerError(f"-p {pair!r}: expected NAME=VALUE with NAME a Python identifier")
        try:
            parameters[key] = json.loads(text)
        except json.JSONDecodeError:
            parameters[key] = text
    return parameters


def new_run_folder(root: Path, label: str) -> Path:
    """A new, empty folder `root/<label>-<timestamp>[-n]`; never reuses an existing one."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt}"
        folder = root / f"{label}-{stamp}{suffix}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise RunnerError(f"could not create a new run folder under {root}")


def pick_kernel() -> str:
    """The project's kernel when it is registered (make setup does it), else the current python3."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "densemtl-lab" if "densemtl-lab" in KernelSpecManager().find_kernel_specs() else "python3"


def execute_notebook(source: Path, target: Path, parameters: dict[str, Any], kernel: str,
                     cell_timeout: int) -> tuple[str, str]:
    """Run one notebook with papermill; returns (status, one-line error)."""
    import papermill

    try:
        papermill.execute_notebook(
            str(source), str(target), parameters=parameters, kernel_name=kernel,
            cwd=str(source.parent), progress_bar=False, execution_timeout=cell_timeout,
        )
    except papermill.PapermillExecutionError as error:
        return "failed", f"{error.ename}: {error.evalue}".splitlines()[0][:500]
    except Exception as error:  # kernel died, timeout, bad notebook: name it and go on
        return "failed", f"{type(error).__name__}: {error}".splitlines()[0][:500]
    return "ok", ""


def read_metrics(output_dir: Path, notebook: Path) -> dict[str, Any]:
    """The `metrics.json` a notebook wrote into OUTPUT_DIR/<notebook stem>/ (empty when absent)."""
    path = output_dir / notebook.stem / "metrics.json"
    if not path.is_file():
        return {}
    with path.open() as handle:
        return json.load(handle)


def run_suite(notebooks: list[Path], run_dir: Path, parameters: dict[str, Any],
              cell_timeout: int = 900) -> list[NotebookResult]:
    """Execute `notebooks` in order into `run_dir`; a failure is recorded and the run goes on."""
    executed_dir = run_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    output_dir = Path(parameters["OUTPUT_DIR"])
    kernel = pick_kernel()
    results = []
    for index, notebook in enumerate(notebooks, start=1):
        print(f"[{index}/{len(notebooks)}] {notebook.name} ...", flush=True)
        target = executed_dir / notebook.name
        started = time.perf_counter()
        status, error = execute_notebook(notebook, target, parameters, kernel, cell_timeout)
        seconds = time.perf_counter() - started
        result = NotebookResult(notebook.stem, status, round(seconds, 1), str(target), error,
                                read_metrics(output_dir, notebook))
        print(f"    {status} in {seconds:.0f} s" + (f": {error}" if error else ""), flush=True)
        results.append(result)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `densemtl-lab run`."""
    parser.add_argument("--profile", default="quick",
                        help="profile for every notebook: smoke, quick (default), full, paper-<dataset>")
    parser.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 03,04")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="extra notebook parameter (repeatable), e.g. -p SEED=1")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                        help="folder of the numbered notebooks (default: ./notebooks)")
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="folder under which a new run folder is created (default: ./runs)")
    parser.add_argument("--data-root", default=None, help="real-data root passed as DATA_ROOT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cell-timeout", type=int, default=900, help="seconds allowed per cell")


def run_from_args(args: argparse.Namespace) -> int:
    """Carry out `densemtl-lab run`; returns the exit status (1 when any notebook failed)."""
    from densemtl_lab.config import get_profile

    get_profile(args.profile)  # an unknown profile stops here, before anything is created
    notebooks = select_notebooks(discover_notebooks(args.notebooks), args.only)
    run_dir = new_run_folder(args.runs, f"suite-{args.profile}").resolve()
    parameters = {"PROFILE": args.profile, "SEED": args.seed, "DEVICE": args.device,
                  "DATA_ROOT": args.data_root, "OUTPUT_DIR": str(run_dir / "outputs")}
    parameters.update(parse_parameters(args.parameter))
    names = ", ".join(path.stem for path in notebooks)
    print(f"Running {len(notebooks)} notebook(s) ({names}) with profile {args.profile!r} into {run_dir}")
    started = time.perf_counter()
    results = run_suite(notebooks, run_dir, parameters, args.cell_timeout)
    summary = {"profile": args.profile, "parameters": parameters,
               "seconds": round(time.perf_counter() - started, 1),
               "python": sys.version.split()[0], "host_cpus": os.cpu_count(),
               "notebooks": [asdict(result) for result in results]}
    report = write_report(run_dir, summary)
    failed = [result.name for result in results if result.status != "ok"]
    print(f"Report: {report}")
    if failed:
        print(f"FAILED notebooks: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"All {len(results)} notebook(s) ran in {summary['seconds']:.0f} s.")
    return 0
