"""Studies: a named grid of runs (models or options) x seeds, resumable, summarised with seed statistics.

`densemtl-lab study NAME --profile P --seeds 5` trains every run of the study as an ordinary run folder
under `<out>/runs/<variant>-s<seed>` (finished runs are skipped, an interrupted one resumes from its
last checkpoint), then writes into `<out>`:

    per_seed.csv     one row per (variant, seed): each task's metrics and delta_m
    summary.json     provenance; mean, standard deviation and n per variant and metric; delta_m per
                     seed; paired differences (a - b, same seed) with a 95% t-interval over seeds
    figures/         per-seed delta_m per variant; paired differences with their intervals

delta_m of a variant is computed per seed against that seed's baseline: the single-task networks
(one `stl` run per task) or a named variant (the source-only run of the adaptation study). With
`--shard k/n` a process runs only every n-th run (a fixed, disjoint share), so several processes or a
job array can split a study over one shared folder; the summary merges whatever runs are complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from densemtl_lab.atomic import write_json_atomic, write_text_atomic
from densemtl_lab.config import ExperimentConfig, get_profile, override
from densemtl_lab.machine import cpu_model
from densemtl_lab.run_folder import run_is_complete
from densemtl_lab.tasks import TASKS, parse_tasks


class StudyError(ValueError):
    """A study request that cannot be carried out (unknown study, bad shard, bad folder)."""


@dataclass(frozen=True)
class Variant:
    """One arm of a study: a label and the config assignments that make it."""

    label: str
    assignments: tuple[str, ...]


@dataclass(frozen=True)
class StudySpec:
    """A named study: its arms, what delta_m compares against, and which paired differences to report."""

    name: str
    description: str
    tasks: str
    variants: tuple[Variant, ...]
    baseline: str  # "stl" (single-task networks, one run per task) or the label of a variant
    comparisons: tuple[tuple[str, str], ...]  # (a, b): a - b per seed
    default_seeds: int
    common: tuple[str, ...] = ()  # assignments every run shares

    def labels(self) -> list[str]:
        return [variant.label for variant in self.variants]


# The adaptation study trains on the toy source scenes whatever domain the profile trains on.
_UDA = ("data.domain=source", "data.target_dataset=toy")
#: The aggregators study's methods (notebook 08): the plain weighted sum first.
_AGGREGATORS = ("none", "mgda", "pcgrad", "upgrad")
STUDIES: dict[str, StudySpec] = {spec.name: spec for spec in (
    StudySpec(
        "architectures", "STL, MTL, PAD-Net, 3-Ways and DenseMTL on S, D, N", "SDN",
        (Variant("stl", ("model.name=stl",)), Variant("mtl", ("model.name=mtl",)),
         Variant("padnet", ("model.name=padnet",)), Variant("3ways", ("model.name=3ways",)),
         Variant("densemtl", ("model.name=densemtl",))),
        baseline="stl", comparisons=(("densemtl", "mtl"), ("mtl", "stl"), ("densemtl", "stl"),
                                     ("3ways", "mtl"), ("padnet", "mtl")),
        default_seeds=5),
    StudySpec(
        "exchange", "DenseMTL without each part of its exchange, against full DenseMTL and MTL", "SDN",
        (Variant("densemtl", ("model.name=densemtl",)),
         Variant("no-correlation", ("model.name=densemtl", "model.correlation=false")),
         Variant("no-self-attention", ("model.name=densemtl", "model.self_attention=false")),
         Variant("alpha-free", ("model.name=densemtl", "model.alpha=false")),
         Variant("mtl", ("model.name=mtl",)), Variant("stl", ("model.name=stl",))),
        baseline="stl", comparisons=(("densemtl", "mtl"), ("no-correlation", "densemtl"),
                                     ("no-self-attention", "densemtl"), ("alpha-free", "densemtl")),
        default_seeds=5),
    StudySpec(
        "adaptation", "source-only, a target-BatchNorm control, adversarial, entropy and oracle on the toy pair",
        "SD",
        (Variant("source-only", ("adapt.method=none",)),
         Variant("bn-control", ("adapt.method=adversarial", "adapt.adversarial_weight=0.0")),
         Variant("adversarial", ("adapt.method=adversarial",)), Variant("entropy", ("adapt.method=entropy",)),
         Variant("oracle", ("adapt.method=oracle",))),
        baseline="source-only",
        comparisons=(("adversarial", "source-only"), ("adversarial", "bn-control"), ("entropy", "source-only"),
                     ("entropy", "bn-control"), ("bn-control", "source-only"), ("oracle", "source-only")),
        default_seeds=3, common=("model.name=densemtl", *_UDA)),
    StudySpec(
        "weighting", "fixed, uncertainty and DWA loss weighting of DenseMTL", "SDN",
        (Variant("fixed", ("train.weighting=fixed",)), Variant("uncertainty", ("train.weighting=uncertainty",)),
         Variant("dwa", ("train.weighting=dwa",)), Variant("stl", ("model.name=stl",))),
        baseline="stl", comparisons=(("uncertainty", "fixed"), ("dwa", "fixed")),
        default_seeds=3, common=("model.name=densemtl",)),
    StudySpec(
        "aggregators", "the weighted sum against MGDA, PCGrad and UPGrad on the encoder of DenseMTL and MTL", "SDN",
        tuple(Variant(f"{model}-{method}" if method != "none" else model,
                      (f"model.name={model}", f"train.aggregator={method}"))
              for model in ("densemtl", "mtl") for method in _AGGREGATORS)
        + (Variant("stl", ("model.name=stl",)),),
        baseline="stl",
        comparisons=tuple((f"{model}-{method}", model) for model in ("densemtl", "mtl")
                          for method in _AGGREGATORS[1:]) + (("densemtl", "mtl"),),
        default_seeds=3),
    StudySpec(
        "precision", "float32 against bf16 autocast on DenseMTL, both NCHW, with a null control: float32 in "
        "channels_last (other rounding and dropout draws, the same training)", "SDN",
        (Variant("fp32", ("train.amp=off", "train.channels_last=false")),
         Variant("fp32-channels-last", ("train.amp=off", "train.channels_last=true")),
         Variant("bf16", ("train.amp=bf16", "train.channels_last=false"))),
        baseline="fp32", comparisons=(("bf16", "fp32"), ("fp32-channels-last", "fp32"), ("bf16", "fp32-channels-last")),
        default_seeds=10, common=("model.name=densemtl",)),
)}


@dataclass(frozen=True)
class StudyRun:
    """One training of a study: a variant (for STL, one task of it) at one seed, with the assignments
    that make it; `name` is its folder under the study's runs/ (e.g. "stl-S-s0", "densemtl-s2")."""

    variant: str
    seed: int
    tasks: str
    assignments: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.tasks}-s{self.seed}" if self.variant == "stl" else f"{self.variant}-s{self.seed}"


def get_study(name: str) -> StudySpec:
    """The named study, or StudyError listing the valid names."""
    if name not in STUDIES:
        raise StudyError(f"unknown study {name!r}; valid studies: {', '.join(STUDIES)}")
    return STUDIES[name]


def plan_runs(spec: StudySpec, seeds: Iterable[int]) -> list[StudyRun]:
    """Every run of the study, seed-major (a partly done study has whole seeds), STL split by task."""
    runs = []
    for seed in seeds:
        for variant in spec.variants:
            assignments = (*spec.common, *variant.assignments)
            if variant.label == "stl":
                runs.extend(StudyRun("stl", seed, TASKS[task].letter, assignments) for task in parse_tasks(spec.tasks))
            else:
                runs.append(StudyRun(variant.label, seed, spec.tasks, assignments))
    return runs


def parse_shard(text: str | None) -> tuple[int, int]:
    """"k/n" -> (k, n) with 1 <= k <= n; None -> (1, 1)."""
    if text is None:
        return 1, 1
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise StudyError(f"--shard {text}: expected k/n, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise StudyError(f"--shard {text}: k must lie between 1 and n")
    return k, n


def shard_of(runs: list[StudyRun], shard: tuple[int, int]) -> list[StudyRun]:
    """The fixed, disjoint share of `runs` that shard (k, n) trains: every n-th run from the k-th."""
    k, n = shard
    return runs[k - 1::n]


def run_config(base: ExperimentConfig, run: StudyRun, extra: Iterable[str] = ()) -> ExperimentConfig:
    """The run's config: the profile, the study's assignments, the seed, then the user's `-p` extras."""
    config = override(base, *run.assignments, f"model.tasks={run.tasks}", f"train.seed={run.seed}", *extra)
    return override(config, f"train.eval_every={config.train.steps}", "train.quiet=true")


# --- statistics ---------------------------------------------------------------------------------------

def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The two-sided t-interval of the mean of `values` (None with fewer than two)."""
    from scipy import stats

    finite = [value for value in values if math.isfinite(value)]
    if len(finite) < 2:
        return None
    mean, sd = statistics.fmean(finite), statistics.stdev(finite)
    half = float(stats.t.ppf(0.5 + level / 2, len(finite) - 1)) * sd / math.sqrt(len(finite))
    return mean - half, mean + half


def describe(values: list[float]) -> dict[str, Any]:
    """{"mean", "std" (sample), "n"} of the finite values (std None below two)."""
    finite = [value for value in values if math.isfinite(value)]
    return {"mean": statistics.fmean(finite) if finite else None,
            "std": statistics.stdev(finite) if len(finite) > 1 else None, "n": len(finite)}


def _main_metric(task: str) -> str:
    return TASKS[task].main_metric


def seed_rows(spec: StudySpec, results: Mapping[tuple[str, int], Mapping[str, Mapping[str, float]]]
              ) -> list[dict[str, Any]]:
    """One row per (variant, seed) with all metrics ("task/metric") and delta_m against that seed's baseline.

    `results[(variant, seed)]` = {task: {metric: value}}; STL's entry merges its per-task runs.
    delta_m is None where the seed's baseline is missing.
    """
    tasks = parse_tasks(spec.tasks)
    rows = []
    for (variant, seed), metrics in sorted(results.items(), key=lambda item: (spec.labels().index(item[0][0]),
                                                                             item[0][1])):
        baseline = results.get((spec.baseline, seed))
        row: dict[str, Any] = {"variant": variant, "seed": seed}
        for task in tasks:
            for metric, value in metrics.get(task, {}).items():
                row[f"{task}/{metric}"] = value
        row["delta_m"] = None if baseline is None else _delta_m(metrics, baseline, tasks)
        rows.append(row)
    return rows


def _delta_m(metrics: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]],
             tasks: list[str]) -> float | None:
    """delta_m (metrics.delta_m's definition) of `metrics` against `baseline`'s main metrics; None where
    a part is missing or a baseline is 0 (a barely trained run: the smoke profile's semseg)."""
    from densemtl_lab.metrics import delta_m

    if any(task not in metrics or task not in baseline for task in tasks):
        return None
    main = {task: baseline[task][_main_metric(task)] for task in tasks}
    if any(value == 0 or not math.isfinite(value) for value in main.values()):
        return None
    return delta_m(metrics, main, tasks)


def summarise(spec: StudySpec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: mean / std / n of every metric and of delta_m; the paired differences with intervals."""
    columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in ("variant", "seed")]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row)
    variants = {}
    for label, chosen in by_variant.items():
        variants[label] = {column: describe([row[column] for row in chosen if row.get(column) is not None])
                           for column in columns}
        variants[label]["seeds"] = sorted(row["seed"] for row in chosen)
    tasks = parse_tasks(spec.tasks)
    compared = ["delta_m", *(f"{task}/{_main_metric(task)}" for task in tasks)]
    comparisons = []
    for a, b in spec.comparisons:
        for column in compared:
            first = {row["seed"]: row.get(column) for row in by_variant.get(a, [])}
            second = {row["seed"]: row.get(column) for row in by_variant.get(b, [])}
            seeds = sorted(seed for seed in first if seed in second
                           and first[seed] is not None and second[seed] is not None)
            differences = [first[seed] - second[seed] for seed in seeds]
            interval = t_interval(differences)
            comparisons.append({"a": a, "b": b, "metric": column, "seeds": seeds, "differences": differences,
                                **describe(differences), "interval95": list(interval) if interval else None})
    return {"variants": variants, "comparisons": comparisons}


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """The per-seed table as CSV text (columns in first-seen order)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: ("" if row.get(key) is None else row[key]) for key in columns} for row in rows)
    return buffer.getvalue()


# --- provenance -----------------------------------------------------------------------------------------

def provenance(command: list[str]) -> dict[str, Any]:
    """What made these results: command, commit, date, machine, torch version."""
    import torch

    root = Path(__file__).resolve().parents[1]
    commit = _git(root, "rev-parse", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    return {"command": " ".join(command), "commit": commit, "dirty": dirty if commit else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def environment_differences(recorded: Mapping[str, Any]) -> list[str]:
    """How this machine differs from the one in `recorded` (a summary's provenance): CPU, GPU, torch version
    and threads, e.g. ["CPU: AMD EPYC (recorded: Intel(R) Xeon(R) Processor)"]; what was not recorded is skipped."""
    now = provenance([])
    machine = recorded.get("machine", {})
    pairs = {"CPU": (now["machine"]["cpu"], machine, "cpu"), "GPU": (now["machine"]["cuda"], machine, "cuda"),
             "torch": (now["torch"], recorded, "torch"), "threads": (now["threads"], recorded, "threads")}
    return [f"{name}: {current} (recorded: {where[key]})" for name, (current, where, key) in pairs.items()
            if key in where and where[key] != current]


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


# --- running ------------------------------------------------------------------------------------------

@dataclass
class StudyOutcome:
    """What `run_study` did and where the summary is."""

    trained: list[str]
    skipped: list[str]
    summary_path: Path
    missing: list[str]


def collect_results(spec: StudySpec, runs: list[StudyRun], runs_dir: Path, steps: int
                    ) -> dict[tuple[str, int], dict[str, dict[str, float]]]:
    """{(variant, seed): {task: metrics}} of every complete run; a variant with a missing part is left out."""
    results: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    incomplete: set[tuple[str, int]] = set()
    for run in runs:
        key = (run.variant, run.seed)
        if not run_is_complete(runs_dir / run.name, steps):
            incomplete.add(key)
            continue
        metrics = json.loads((runs_dir / run.name / "metrics.json").read_text())["metrics"]
        results.setdefault(key, {}).update({task: values for task, values in metrics.items() if task in TASKS})
    return {key: value for key, value in results.items() if key not in incomplete}


def run_study(spec: StudySpec, profile: str, out: Path, seeds: list[int], *, extra: tuple[str, ...] = (),
              shard: tuple[int, int] = (1, 1), device: str | None = None, command: list[str] | None = None,
              progress: bool = True) -> StudyOutcome:
    """Train this shard's missing runs of the study in `out`/runs, then summarise every complete run."""
    from tqdm.auto import tqdm

    from densemtl_lab import uda  # noqa: F401  (registers the adaptation methods the adaptation study trains)
    from densemtl_lab.train import Trainer, check_resumable

    base = get_profile(profile)
    if device is not None:
        base = override(base, f"train.device={device}")
    runs = plan_runs(spec, seeds)
    mine = shard_of(runs, shard)
    configs = {run.name: run_config(base, run, extra) for run in runs}
    steps = {config.train.steps for config in configs.values()}
    if len(steps) != 1:
        raise StudyError(f"the runs of study {spec.name!r} would train different numbers of steps {sorted(steps)}")
    (steps,) = steps
    runs_dir = out / "runs"
    trained, skipped = [], []
    with tqdm(total=len(mine), unit="run", desc=f"study {spec.name}", disable=not progress) as bar:
        for run in mine:
            bar.set_postfix_str(run.name)
            if run_is_complete(runs_dir / run.name, steps):
                check_resumable(runs_dir / run.name, configs[run.name])  # a finished run of other settings stops here
                skipped.append(run.name)
            else:
                started = time.perf_counter()
                result = Trainer(configs[run.name], runs_dir / run.name, resume=True).fit()
                # A resumed run adds the time of this part to the time its interrupted part took. Read the
                # file again just before writing: other shards add their runs to it meanwhile.
                timings = _read_timings(out)
                timings[run.name] = round(timings.get(run.name, 0.0) + time.perf_counter() - started, 1)
                write_json_atomic(out / "timings.json", timings)
                if result.interrupted:  # Ctrl-C: the trainer saved the run; the study stops with it
                    raise KeyboardInterrupt
                trained.append(run.name)
            diagnose_run(runs_dir / run.name, configs[run.name])
            bar.update(1)
    summary_path = write_summary(spec, profile, out, runs, configs, command or sys.argv, _read_timings(out))
    missing = [run.name for run in runs if not run_is_complete(runs_dir / run.name, steps)]
    return StudyOutcome(trained, skipped, summary_path, missing)


def diagnose_run(run_dir: Path, config: ExperimentConfig) -> Path | None:
    """Write `run_dir`/diagnostics.json (densemtl_lab.diagnostics) for a finished DenseMTL run, once.

    None for other models and for runs not finished. Entropy over the first 16 validation images.
    """
    path = run_dir / "diagnostics.json"
    if config.model.name != "densemtl" or not run_is_complete(run_dir, config.train.steps):
        return None
    if not path.is_file():
        from densemtl_lab.data.build import build_dataset
        from densemtl_lab.diagnostics import diagnose
        from densemtl_lab.distributed import ProcessContext, process_device
        from densemtl_lab.train import load_trained_model

        device = process_device(ProcessContext(), config.train.device)
        model, _, _ = load_trained_model(run_dir / "checkpoints" / "best.pt", device)
        target = "target" if config.data.target_dataset else None
        dataset = build_dataset(config.data, "val", target, config.model.task_names)
        report = diagnose(model, dataset, config, device)
        write_json_atomic(path, {key: report[key] for key in ("alpha", "entropy", "metrics", "main_metric_change")})
    return path


def summarise_diagnostics(reports: Mapping[tuple[str, int], Mapping[str, Any]]) -> dict[str, Any]:
    """Per variant, from each seed's diagnostics.json: mean |alpha| and attention entropy per pair and
    over all pairs, and each switch's main-metric change per task (absolute, and in % of the full
    model's value), each as mean / std / n over seeds."""
    by_variant: dict[str, dict[int, Mapping[str, Any]]] = {}
    for (variant, seed), report in sorted(reports.items()):
        by_variant.setdefault(variant, {})[seed] = report
    summary = {}
    for variant, seeds in by_variant.items():
        reports_ = list(seeds.values())
        entry: dict[str, Any] = {"seeds": sorted(seeds)}
        for key in ("alpha", "entropy"):
            pairs = list(reports_[0][key])
            entry[key] = {pair: describe(_present(report[key][pair] for report in reports_)) for pair in pairs}
            entry[f"mean_{key}"] = describe(_present(_mean_or_none(report[key].values()) for report in reports_))
        changes: dict[str, dict[str, Any]] = {}
        for switch in reports_[0]["main_metric_change"]:
            changes[switch] = {}
            for task in reports_[0]["main_metric_change"][switch]:
                main = _main_metric(task)
                absolute = [report["main_metric_change"][switch][task] for report in reports_]
                full = [report["metrics"]["full"][task][main] for report in reports_]
                relative = [100 * change / value for change, value in zip(absolute, full) if value]
                changes[switch][task] = {"change": describe(absolute), "percent": describe(relative)}
        entry["main_metric_change"] = changes
        summary[variant] = entry
    return summary


def _present(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None]


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    present = _present(values)
    return statistics.fmean(present) if present else None


def _read_diagnostics(runs: list[StudyRun], runs_dir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    reports = {}
    for run in runs:
        path = runs_dir / run.name / "diagnostics.json"
        if path.is_file():
            reports[(run.variant, run.seed)] = json.loads(path.read_text())
    return reports


def _read_timings(out: Path) -> dict[str, float]:
    try:
        return dict(json.loads((out / "timings.json").read_text()))
    except (OSError, ValueError):
        return {}


def write_summary(spec: StudySpec, profile: str, out: Path, runs: list[StudyRun],
                  configs: Mapping[str, ExperimentConfig], command: list[str], timings: Mapping[str, float]) -> Path:
    """Write per_seed.csv, summary.json and the figures from the complete runs in `out`/runs.

    The summary keeps every run's full config, so that `verify_run` can retrain one at its recorded
    settings even after the profile has changed.
    """
    steps = configs[runs[0].name].train.steps
    results = collect_results(spec, runs, out / "runs", steps)
    complete = sum(run_is_complete(out / "runs" / run.name, steps) for run in runs)
    rows = seed_rows(spec, results)
    summary = summarise(spec, rows)
    record = {"study": spec.name, "description": spec.description, "profile": profile, "tasks": spec.tasks,
              "steps": steps, "baseline": spec.baseline,
              "runs": {"planned": len(runs), "complete": complete},
              "provenance": {**provenance(command), "seconds_per_run": dict(timings),
                             "seconds": round(sum(timings.values()), 1)},
              "per_seed": rows, **summary,
              "diagnostics": summarise_diagnostics(_read_diagnostics(runs, out / "runs")),
              "run_configs": {run.name: {"variant": run.variant, "seed": run.seed, "tasks": run.tasks,
                                         "config": configs[run.name].to_dict()} for run in runs}}
    write_text_atomic(out / "per_seed.csv", rows_to_csv(rows))
    path = write_json_atomic(out / "summary.json", record)
    if rows:
        from densemtl_lab.viz.studies import save_study_figures

        save_study_figures(record, out / "figures")
    return path


# --- shipped results and their verification -------------------------------------------------------------

#: Where the package keeps the `course` studies' summaries (summary.json and per_seed.csv per study).
SHIPPED_STUDIES = Path(__file__).resolve().parent / "resources" / "studies"


def shipped_studies() -> list[str]:
    """The "<study>-<profile>" folders the package ships."""
    return sorted(path.parent.name for path in SHIPPED_STUDIES.glob("*/summary.json"))


def load_shipped(name: str, profile: str = "course") -> dict[str, Any]:
    """The shipped summary of study `name` on `profile` (StudyError naming what is shipped if none)."""
    path = SHIPPED_STUDIES / f"{name}-{profile}" / "summary.json"
    if not path.is_file():
        raise StudyError(f"no shipped results for study {name!r} on profile {profile!r}; shipped: "
                         f"{', '.join(shipped_studies()) or 'none'}")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class MetricCheck:
    """One metric of a verified run: recorded, measured again, and whether they agree within tolerance."""

    task: str
    metric: str
    recorded: float
    measured: float
    main: bool
    tolerance: float

    @property
    def relative_difference(self) -> float:
        return abs(self.measured - self.recorded) / max(abs(self.recorded), 1e-12)

    @property
    def agrees(self) -> bool:
        """Main metrics must lie within the relative tolerance; the others are reported only."""
        return not self.main or self.relative_difference <= self.tolerance


def default_verify_run(summary: Mapping[str, Any]) -> str:
    """The run `--verify` retrains by default: the first compared variant's run at its smallest recorded seed."""
    variant = summary["comparisons"][0]["a"] if summary["comparisons"] else summary["per_seed"][0]["variant"]
    seeds = [row["seed"] for row in summary["per_seed"] if row["variant"] == variant]
    if not seeds:
        raise StudyError(f"the summary of study {summary['study']!r} has no complete {variant!r} run to verify")
    return next(name for name, run in summary["run_configs"].items()
                if run["variant"] == variant and run["seed"] == min(seeds))


def verify_run(summary: Mapping[str, Any], run_name: str, folder: Path, *, tolerance: float = 0.05,
               device: str | None = None) -> list[MetricCheck]:
    """Retrain one run of a study summary at its recorded config in `folder`; compare its metrics.

    On the machine, thread count and torch version that recorded it, the run is bit-for-bit the same
    (tests/test_train.py checks this). Elsewhere the CPU kernels add in another order and bf16 rounds
    differently, and 1,200 optimiser steps amplify those differences: expect a few percent.
    """
    runs = summary.get("run_configs", {})
    if run_name not in runs:
        raise StudyError(f"run {run_name!r} is not in the summary of study {summary['study']!r}; its runs: "
                         f"{', '.join(list(runs)[:8])}{' ...' if len(runs) > 8 else ''}")
    run = runs[run_name]
    row = next((row for row in summary["per_seed"] if (row["variant"], row["seed"]) == (run["variant"], run["seed"])),
               None)
    if row is None:
        raise StudyError(f"run {run_name!r} has no recorded metrics in the summary (it was not complete)")
    config = ExperimentConfig.from_dict(run["config"])
    if device is not None:
        config = override(config, f"train.device={device}")
    from densemtl_lab import uda  # noqa: F401  (registers the adaptation methods)
    from densemtl_lab.train import Trainer

    if not run_is_complete(folder, config.train.steps):
        Trainer(config, folder, resume=True).fit()
    measured = json.loads((folder / "metrics.json").read_text())["metrics"]
    checks = []
    for task in parse_tasks(run["tasks"]):
        for metric, value in measured[task].items():
            recorded = row.get(f"{task}/{metric}")
            if recorded is not None:
                checks.append(MetricCheck(task, metric, float(recorded), float(value),
                                          metric == _main_metric(task), tolerance))
    return checks
