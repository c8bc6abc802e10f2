"""Studies: the run plan, shards, resumption after a kill, per-seed delta_m and paired t-intervals."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics

import pytest
from scipy import stats

from densemtl_lab import study
from densemtl_lab.cli import main
from densemtl_lab.config import get_profile
from densemtl_lab.metrics import nest_metrics
from densemtl_lab.study import (
    STUDIES, StudyError, StudySpec, Variant, get_study, parse_shard, plan_runs, run_study, seed_rows, shard_of,
    summarise, t_interval,
)

#: A small study for the end-to-end tests: two arms on S and D (3 smoke runs per seed).
TINY = StudySpec("tiny", "STL and MTL on S and D", "SD",
                 (Variant("stl", ("model.name=stl",)), Variant("mtl", ("model.name=mtl",))),
                 baseline="stl", comparisons=(("mtl", "stl"),), default_seeds=2)


def test_every_named_study_plans_its_runs_seed_major_with_stl_split_by_task():
    assert {"architectures", "exchange", "adaptation", "weighting"} <= set(STUDIES)
    runs = plan_runs(get_study("architectures"), [0, 1])
    assert [run.name for run in runs[:7]] == ["stl-S-s0", "stl-D-s0", "stl-N-s0", "mtl-s0", "padnet-s0",
                                               "3ways-s0", "densemtl-s0"]
    assert len(runs) == 14 and len({run.name for run in runs}) == 14
    adaptation = plan_runs(get_study("adaptation"), [2])
    assert [run.name for run in adaptation] == ["source-only-s2", "bn-control-s2", "adversarial-s2",
                                                 "entropy-s2", "oracle-s2"]
    assert "adapt.adversarial_weight=0.0" in adaptation[1].assignments
    with pytest.raises(StudyError, match="unknown study 'nope'; valid studies: architectures"):
        get_study("nope")


def test_shards_are_fixed_disjoint_and_cover_the_study():
    runs = plan_runs(get_study("exchange"), range(5))
    shards = [shard_of(runs, (k, 4)) for k in range(1, 5)]
    names = [run.name for share in shards for run in share]
    assert sorted(names) == sorted(run.name for run in runs) and len(names) == len(set(names))
    assert parse_shard("3/4") == (3, 4) and parse_shard(None) == (1, 1)
    for bad in ("0/4", "5/4", "two"):
        with pytest.raises(StudyError, match=f"--shard {bad}"):
            parse_shard(bad)


def test_t_interval_matches_the_textbook_formula():
    low, high = t_interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half)) and half == pytest.approx(2.4841, abs=1e-4)
    assert t_interval([5.0]) is None


def _metrics(miou: float, rmse: float) -> dict:
    return {"semseg": {"mIoU": miou, "pixel_acc": 90.0}, "depth": {"rmse": rmse, "abs_rel": 0.1}}


def test_delta_m_is_per_seed_against_that_seeds_baseline_and_differences_are_paired():
    results = {("stl", 0): _metrics(50.0, 10.0), ("mtl", 0): _metrics(55.0, 9.0),  # +10 %, +10 %
               ("stl", 1): _metrics(40.0, 8.0), ("mtl", 1): _metrics(40.0, 10.0),  # 0 %, -25 %
               ("mtl", 2): _metrics(60.0, 5.0)}  # seed 2 has no baseline
    rows = seed_rows(TINY, results)
    by_key = {(row["variant"], row["seed"]): row for row in rows}
    assert by_key["mtl", 0]["delta_m"] == pytest.approx(10.0)
    assert by_key["mtl", 1]["delta_m"] == pytest.approx(-12.5)
    assert by_key["stl", 1]["delta_m"] == 0.0 and by_key["mtl", 2]["delta_m"] is None
    summary = summarise(TINY, rows)
    assert summary["variants"]["mtl"]["semseg/mIoU"] == {"mean": pytest.approx(155 / 3),
                                                         "std": pytest.approx(statistics.stdev([55, 40, 60])), "n": 3}
    paired = next(item for item in summary["comparisons"] if item["metric"] == "delta_m")
    assert paired["seeds"] == [0, 1] and paired["differences"] == pytest.approx([10.0, -12.5])
    assert paired["interval95"] == pytest.approx(list(t_interval([10.0, -12.5])))
    depth = next(item for item in summary["comparisons"] if item["metric"] == "depth/rmse")
    assert depth["differences"] == pytest.approx([-1.0, 2.0])


@pytest.fixture(scope="module")
def tiny_study(module_folder):
    """The tiny study on the smoke profile, 2 seeds, run in two shards: 6 runs of 4 steps."""
    out = module_folder / "tiny"
    first = run_study(TINY, "smoke", out, [0, 1], shard=(1, 2), device="cpu", progress=False)
    second = run_study(TINY, "smoke", out, [0, 1], shard=(2, 2), device="cpu", progress=False)
    return out, first, second


@pytest.mark.slow
def test_shards_split_the_work_and_the_summary_merges_them(tiny_study):
    out, first, second = tiny_study
    assert first.trained == ["stl-S-s0", "mtl-s0", "stl-D-s1"] and first.missing
    assert second.trained == ["stl-D-s0", "stl-S-s1", "mtl-s1"] and not second.missing
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == {"planned": 6, "complete": 6}
    assert [(row["variant"], row["seed"]) for row in summary["per_seed"]] == [
        ("stl", 0), ("stl", 1), ("mtl", 0), ("mtl", 1)]
    assert set(summary["provenance"]) >= {"command", "commit", "date", "machine", "torch", "seconds_per_run",
                                          "seconds"}
    assert set(summary["provenance"]["seconds_per_run"]) == {run.name for run in plan_runs(TINY, [0, 1])}
    with open(out / "per_seed.csv") as table:
        rows = list(csv.DictReader(table))
    assert [row["variant"] for row in rows] == ["stl", "stl", "mtl", "mtl"] and "depth/rmse" in rows[0]
    assert (out / "figures" / "delta_m_per_seed.png").is_file()
    assert (out / "figures" / "paired_differences.png").is_file()


@pytest.mark.slow
def test_a_killed_study_redoes_only_the_run_in_progress(tiny_study, tmp_path, monkeypatch):
    out, _, _ = tiny_study
    copy = tmp_path / "tiny"
    (copy / "runs").mkdir(parents=True)
    for name in ("stl-S-s0", "stl-D-s0"):  # two runs done before the kill
        (copy / "runs" / name).symlink_to(out / "runs" / name, target_is_directory=True)
    from densemtl_lab import train

    real_fit, calls = train.Trainer.fit, []

    def killed_on_the_second_fit(self, *args, **kwargs):
        calls.append(self.run_dir.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(train.Trainer, "fit", killed_on_the_second_fit)
    with pytest.raises(KeyboardInterrupt):
        run_study(TINY, "smoke", copy, [0, 1], device="cpu", progress=False)
    monkeypatch.setattr(train.Trainer, "fit", real_fit)
    again = run_study(TINY, "smoke", copy, [0, 1], device="cpu", progress=False)
    assert calls == ["mtl-s0", "stl-S-s1"]
    assert again.skipped == ["stl-S-s0", "stl-D-s0", "mtl-s0"]
    assert again.trained == ["stl-S-s1", "stl-D-s1", "mtl-s1"]  # the interrupted run, then the rest


@pytest.mark.slow
def test_a_finished_run_of_other_settings_is_not_taken_for_one_of_this_study(tiny_study):
    out, _, _ = tiny_study
    from densemtl_lab.train import RunDirError

    with pytest.raises(RunDirError, match=r"cannot resume .*stl-S-s0: its config differs in optim.lr"):
        run_study(TINY, "smoke", out, [0, 1], extra=("optim.lr=0.01",), device="cpu", progress=False)


@pytest.mark.slow
def test_ctrl_c_stops_the_study_with_the_run_saved_and_its_time_kept(tmp_path):
    from densemtl_lab import train

    out, calls = tmp_path / "tiny", []
    real_fit = train.Trainer.fit

    def ctrl_c_at_step_2(self, *args, **kwargs):  # the trainer's own Ctrl-C path: save, then return
        calls.append(self.run_dir.name)
        result = real_fit(self, until=2) if len(calls) == 1 else real_fit(self, *args, **kwargs)
        if len(calls) == 1:
            result = dataclasses.replace(result, interrupted=True)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.Trainer, "fit", ctrl_c_at_step_2)
        with pytest.raises(KeyboardInterrupt):
            run_study(TINY, "smoke", out, [0], device="cpu", progress=False)
        assert calls == ["stl-S-s0"]  # nothing after the interrupted run was started
        first = json.loads((out / "timings.json").read_text())["stl-S-s0"]
        again = run_study(TINY, "smoke", out, [0], device="cpu", progress=False)
    assert again.trained == ["stl-S-s0", "stl-D-s0", "mtl-s0"] and not again.missing
    assert json.loads((out / "runs" / "stl-S-s0" / "metrics.json").read_text())["step"] == 4
    assert json.loads((out / "timings.json").read_text())["stl-S-s0"] > first  # both parts counted


@pytest.mark.slow
def test_the_study_command_trains_a_shard_and_reports(tmp_path, capsys):
    out = tmp_path / "arch"
    assert main(["study", "architectures", "--profile", "smoke", "--seeds", "1", "--shard", "1/7",
                 "--out", str(out), "--device", "cpu", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Trained 1 run(s), 0 already complete" in printed and "6 run(s) of the study not complete" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == {"planned": 7, "complete": 1} and summary["per_seed"] == []
    assert summary["provenance"]["command"] == (f"densemtl-lab study architectures --profile smoke --seeds 1 "
                                                f"--shard 1/7 --out {out} --device cpu --quiet")


def test_figures_show_every_seed_and_every_interval(tmp_path):
    from densemtl_lab.viz.studies import paired_differences_figure, save_study_figures, seed_points_figure

    results = {("stl", seed): _metrics(50.0, 10.0) for seed in range(3)}
    results.update({("mtl", seed): _metrics(50.0 + seed, 10.0 - seed) for seed in range(3)})
    rows = seed_rows(TINY, results)
    record = {"study": "tiny", "profile": "quick", "baseline": "stl", "per_seed": rows, **summarise(TINY, rows)}
    points = seed_points_figure(record)
    from matplotlib.collections import PathCollection

    dots = [c for c in points.axes[0].collections if isinstance(c, PathCollection)]
    assert sum(len(collection.get_offsets()) for collection in dots) == 6
    assert "delta_m per seed, vs stl" in points.axes[0].get_title()
    paired = paired_differences_figure(record)
    assert [label.get_text() for label in paired.axes[0].get_yticklabels()] == ["mtl - stl"]
    assert paired.get_suptitle().startswith("study tiny (quick): delta_m, a - b per seed")
    assert [path.name for path in save_study_figures(record, tmp_path)] == ["delta_m_per_seed.png",
                                                                          "paired_differences.png"]


#: DenseMTL against its single-task networks on S and D: a study whose DenseMTL runs are diagnosed.
TINY_DENSE = StudySpec("tiny-dense", "STL and DenseMTL on S and D", "SD",
                       (Variant("stl", ("model.name=stl",)), Variant("densemtl", ("model.name=densemtl",))),
                       baseline="stl", comparisons=(("densemtl", "stl"),), default_seeds=1)


@pytest.fixture(scope="module")
def dense_study(module_folder):
    out = module_folder / "tiny-dense"
    run_study(TINY_DENSE, "smoke", out, [0], device="cpu", progress=False)
    return out, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_a_study_diagnoses_its_densemtl_runs_and_summarises_the_attention(dense_study):
    out, summary = dense_study
    assert (out / "runs" / "densemtl-s0" / "diagnostics.json").is_file()
    assert not (out / "runs" / "stl-S-s0" / "diagnostics.json").exists()
    report = json.loads((out / "runs" / "densemtl-s0" / "diagnostics.json").read_text())
    diagnostics = summary["diagnostics"]["densemtl"]
    assert list(summary["diagnostics"]) == ["densemtl"] and diagnostics["seeds"] == [0]
    assert set(diagnostics["alpha"]) == {"semseg<-depth", "depth<-semseg"}
    assert diagnostics["alpha"]["depth<-semseg"]["mean"] == report["alpha"]["depth<-semseg"]
    assert diagnostics["mean_entropy"]["mean"] == pytest.approx(statistics.fmean(report["entropy"].values()))
    depth_off = diagnostics["main_metric_change"]["no correlation"]["depth"]
    full_rmse = report["metrics"]["full"]["depth"]["rmse"]
    assert depth_off["change"]["mean"] == report["main_metric_change"]["no correlation"]["depth"]
    assert depth_off["percent"]["mean"] == pytest.approx(100 * depth_off["change"]["mean"] / full_rmse)


@pytest.mark.slow
def test_verify_retrains_a_recorded_run_and_finds_the_same_metrics(dense_study, tmp_path):
    _, summary = dense_study
    assert study.default_verify_run(summary) == "densemtl-s0"
    checks = study.verify_run(summary, "densemtl-s0", tmp_path / "again", tolerance=0.0)
    assert {(check.task, check.metric) for check in checks if check.main} == {("semseg", "mIoU"), ("depth", "rmse")}
    assert all(check.measured == check.recorded and check.agrees for check in checks)  # same machine: bit for bit
    with pytest.raises(StudyError, match="run 'mtl-s0' is not in the summary of study 'tiny-dense'"):
        study.verify_run(summary, "mtl-s0", tmp_path / "other")


def test_a_metric_check_fails_only_a_main_metric_beyond_the_tolerance():
    assert not study.MetricCheck("depth", "rmse", 4.0, 4.3, True, 0.05).agrees  # 7.5 %
    assert study.MetricCheck("depth", "rmse", 4.0, 4.1, True, 0.05).agrees  # 2.5 %
    assert study.MetricCheck("depth", "abs_rel", 0.1, 0.2, False, 0.05).agrees  # reported only


def test_verify_without_shipped_results_names_what_is_shipped(capsys):
    assert main(["study", "weighting", "--profile", "smoke", "--verify"]) == 2
    error = capsys.readouterr().err
    assert "no shipped results for study 'weighting' on profile 'smoke'; shipped: " in error


@pytest.mark.parametrize("folder", study.shipped_studies())
def test_a_shipped_summary_recomputes_exactly_from_its_per_seed_rows(folder):
    name, profile = folder.split("-", 1)[0], folder.split("-", 1)[1]
    summary = study.load_shipped(name, profile)
    spec = get_study(summary["study"])
    rows = summary["per_seed"]
    results = {(row["variant"], row["seed"]): nest_metrics(row) for row in rows}
    assert seed_rows(spec, results) == rows  # every delta_m from the metrics beside it
    recomputed = summarise(spec, rows)
    assert recomputed["variants"] == summary["variants"] and recomputed["comparisons"] == summary["comparisons"]
    with open(study.SHIPPED_STUDIES / folder / "per_seed.csv") as table:
        assert list(csv.DictReader(table)) == [{key: ("" if value is None else str(value))
                                                for key, value in row.items()} for row in rows]


def _record(results):
    rows = seed_rows(TINY, results)
    return {"study": "tiny", "profile": "course", "baseline": "stl", "steps": 1200, "per_seed": rows,
            "runs": {"planned": 6, "complete": 6},
            "provenance": {"date": "2026-12-06T05:00:00+00:00", "commit": "abcdef123456", "seconds": 7200,
                           "machine": {"cpu": "a test CPU"}},
            **summarise(TINY, rows)}


def test_findings_are_printed_from_the_record():
    from densemtl_lab.viz.studies import interval_verdict, study_findings

    results = {("stl", seed): _metrics(50.0, 10.0) for seed in range(3)}
    results.update({("mtl", seed): _metrics(55.0 + seed, 9.0) for seed in range(3)})  # +10, +11, +12 %
    text = study_findings(_record(results))
    assert "Study 'tiny', profile 'course': 6 of 6 runs, seeds [0, 1, 2], 1200 steps each; 2026-12-06, " \
           "commit abcdef1, a test CPU, 2.0 h of training." in text
    assert "  mtl                 +11.00 ± 1.00  (n=3)" in text
    low, high = t_interval([10.0, 11.0, 12.0])
    assert f"mtl - stl                     +11.00  [{low:+.2f}, {high:+.2f}]    above zero (n=3)" in text
    assert [interval_verdict(i) for i in ([1, 2], [-2, -1], [-1, 1], None)] == [
        "above zero", "below zero", "includes zero", "one seed, no interval"]


def test_findings_print_the_paired_differences_of_each_metric_asked_for():
    from densemtl_lab.viz.studies import study_findings

    results = {("stl", seed): _metrics(50.0, 10.0) for seed in range(3)}
    results.update({("mtl", seed): _metrics(52.0 + seed, 9.0) for seed in range(3)})  # mIoU +2, +3, +4
    text = study_findings(_record(results), metrics=("delta_m", "semseg/mIoU"))
    low, high = t_interval([2.0, 3.0, 4.0])
    assert "Paired differences of semseg/mIoU (a - b, same seed), mean and 95% t-interval:" in text
    assert f"mtl - stl                      +3.00  [{low:+.2f}, {high:+.2f}]     above zero (n=3)" in text
    assert "semseg/mIoU" not in study_findings(_record(results))  # delta_m alone by default


def test_study_means_give_each_variant_the_nested_shape_of_a_metrics_table():
    from densemtl_lab.viz.figures import metrics_table
    from densemtl_lab.viz.studies import study_means

    results = {("stl", seed): _metrics(50.0, 10.0) for seed in range(2)}
    results.update({("mtl", seed): _metrics(52.0 + 2 * seed, 9.0) for seed in range(2)})
    means = study_means(_record(results))
    assert means["mtl"]["semseg"] == {"mIoU": 53.0, "pixel_acc": 90.0} and means["mtl"]["depth"]["rmse"] == 9.0
    assert means["stl"]["delta_m"] == 0.0 and means["mtl"]["delta_m"] == pytest.approx(8.0)  # (7 + 9) / 2
    table = metrics_table(means, ["semseg/mIoU", "depth/rmse", "delta_m"])
    cells = table.axes[0].tables[0].get_celld()
    assert [cells[2, column].get_text().get_text() for column in range(3)] == ["53.00", "9.00", "8.00"]


@pytest.mark.slow
def test_findings_report_the_attention_of_a_diagnosed_study(dense_study):
    from densemtl_lab.viz.studies import study_findings

    _, summary = dense_study
    text = study_findings(summary)
    alpha = summary["diagnostics"]["densemtl"]["mean_alpha"]["mean"]
    assert f"mean |alpha| (0 = branch closed)         {alpha:.3f}" in text
    change = summary["diagnostics"]["densemtl"]["main_metric_change"]["no correlation"]["depth"]
    assert ("switched off at test time, correlation     semseg mIoU " in text
            and f"depth rmse {change['change']['mean']:+.2f} ({change['percent']['mean']:+.1f} %)" in text)


def test_a_learners_runs_are_drawn_beside_the_study_seeds():
    from matplotlib.collections import PathCollection

    from densemtl_lab.viz.studies import seed_points_figure

    results = {("stl", seed): _metrics(50.0, 10.0) for seed in range(3)}
    results.update({("mtl", seed): _metrics(50.0 + seed, 10.0 - seed) for seed in range(3)})
    figure = seed_points_figure(_record(results), yours={"mtl": 4.0, "stl": 0.0}, yours_label="your quick run")
    stars = [c for c in figure.axes[0].collections if isinstance(c, PathCollection) and c.get_label() == "your quick run"]
    assert len(stars) == 1 and sorted(stars[0].get_offsets()[:, 1]) == [0.0, 4.0]
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == [
        "study seeds (course)", "your quick run"]


def test_environment_differences_name_what_is_not_the_recorded_machine():
    here = study.provenance([])
    assert study.environment_differences(here) == []
    elsewhere = {**here, "machine": {**here["machine"], "cpu": "Some Other CPU"}, "torch": "1.0"}
    del elsewhere["threads"]  # not recorded: not compared
    assert study.environment_differences(elsewhere) == [
        f"CPU: {here['machine']['cpu']} (recorded: Some Other CPU)", f"torch: {here['torch']} (recorded: 1.0)"]


@pytest.mark.slow
def test_the_verify_command_retrains_the_default_run_and_agrees_on_the_same_machine(tmp_path, monkeypatch, capsys):
    out = tmp_path / "arch"
    assert main(["study", "architectures", "--profile", "smoke", "--seeds", "1", "--shard", "7/7", "--out", str(out),
                 "--device", "cpu", "--quiet"]) == 0  # densemtl-s0 alone
    shipped = tmp_path / "shipped"
    (shipped / "architectures-smoke").mkdir(parents=True)
    (shipped / "architectures-smoke" / "summary.json").write_text((out / "summary.json").read_text())
    monkeypatch.setattr(study, "SHIPPED_STUDIES", shipped)
    capsys.readouterr()
    assert main(["study", "architectures", "--profile", "smoke", "--verify", "--tolerance", "0", "--out",
                 str(tmp_path / "again"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Verifying densemtl-s0 of the shipped architectures study (smoke), recorded on ")
    assert "Not the recorded machine" not in printed
    assert "depth/rmse" in printed and printed.rstrip().endswith("Agrees: every main metric within 0 %")
    assert (tmp_path / "again" / "verify" / "densemtl-s0" / "metrics.json").is_file()


@pytest.mark.slow
def test_a_shard_keeps_the_times_another_shard_wrote_while_it_trained(tmp_path):
    from densemtl_lab import train

    out, real_fit = tmp_path / "tiny", train.Trainer.fit

    def another_shard_finishes_meanwhile(self, *args, **kwargs):
        (out / "timings.json").write_text(json.dumps({"stl-D-s0": 12.5}))
        return real_fit(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.Trainer, "fit", another_shard_finishes_meanwhile)
        run_study(TINY, "smoke", out, [0], shard=(1, 3), device="cpu", progress=False)  # stl-S-s0 alone
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"stl-S-s0", "stl-D-s0"} and timings["stl-D-s0"] == 12.5


def test_the_aggregators_study_shares_its_plain_runs_with_the_architectures_study():
    base = get_profile("course")
    shared = {"densemtl-s0", "mtl-s0", "stl-S-s0", "stl-D-s0", "stl-N-s0"}
    configs = [{run.name: study.run_config(base, run) for run in plan_runs(get_study(name), [0]) if run.name in shared}
               for name in ("architectures", "aggregators")]
    assert configs[0].keys() == shared and configs[0] == configs[1]  # one training serves both (link the folders)
    methods = {run.name: study.run_config(base, run).train.aggregator for run in plan_runs(get_study("aggregators"), [0])}
    assert methods["densemtl-upgrad-s0"] == "upgrad" and methods["mtl-mgda-s0"] == "mgda"


@pytest.mark.parametrize("profile", ["quick", "course", "paper-synthia"])
def test_the_precision_study_arms_differ_only_in_precision_and_memory_format(profile):
    base = get_profile(profile)
    configs = {run.variant: study.run_config(base, run) for run in plan_runs(get_study("precision"), [0])}
    assert (configs["fp32"].train.amp, configs["fp32"].train.channels_last) == ("off", False)
    assert (configs["fp32-channels-last"].train.amp, configs["fp32-channels-last"].train.channels_last) == ("off", True)
    assert (configs["bf16"].train.amp, configs["bf16"].train.channels_last) == ("bf16", False)

    def without_precision(config):
        return dataclasses.replace(config, train=dataclasses.replace(config.train, amp="off", channels_last=False))

    assert without_precision(configs["bf16"]) == without_precision(configs["fp32"]) \
        == without_precision(configs["fp32-channels-last"])


def test_attention_goals_say_met_or_not_from_the_recorded_diagnostics():
    import copy

    from densemtl_lab.study import load_shipped
    from densemtl_lab.viz.studies import ALPHA_GOAL, attention_goals

    record = load_shipped("architectures", "course")
    alpha = record["diagnostics"]["densemtl"]["mean_alpha"]["mean"]
    line = next(line for line in attention_goals(record).splitlines() if "|alpha|" in line)
    assert f"{alpha:.3f}" in line and line.endswith("NOT met" if alpha < ALPHA_GOAL else " met")
    opened = copy.deepcopy(record)
    opened["diagnostics"]["densemtl"]["mean_alpha"]["mean"] = 2 * ALPHA_GOAL
    closed = copy.deepcopy(record)
    closed["diagnostics"]["densemtl"]["main_metric_change"]["no correlation"] = {
        task: {**change, "change": {**change["change"], "mean": 0.0}, "percent": {**change["percent"], "mean": 0.0}}
        for task, change in record["diagnostics"]["densemtl"]["main_metric_change"]["no correlation"].items()}
    lines = {name: attention_goals(value).splitlines() for name, value in (("opened", opened), ("closed", closed))}
    assert lines["opened"][1].endswith(" met") and not lines["opened"][1].endswith("NOT met")
    assert "no task" in lines["closed"][3] and lines["closed"][3].endswith("NOT met")
    assert attention_goals(record, "stl") == "stl: the study has no attention diagnostics"
