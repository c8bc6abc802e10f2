"""Tests of bench/compare_official.py's driver: the reference check, and the table it makes of the measurements.

The measurements themselves need a checkout of the official code, which CI does not have: the script
is run by hand (docs/benchmarks.md). What CI checks is what turns measurements into the reported
ratios, and that a wrong --reference gets one line naming the missing file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import compare_official  # noqa: E402


def _run(step_s: float, peak: float, total: float, flops: int | None = None, params: int = 111_006_952) -> dict:
    return {"step_s": step_s, "peak_mem_mib": peak, "peak_total_mib": total, "params": params,
            "settings": {"amp": "off"}, "flops": flops}


def test_a_checkout_without_the_official_model_is_named_in_one_line(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "parts.py").write_text("")
    with pytest.raises(SystemExit) as stop:
        compare_official.check_reference(tmp_path)
    assert str(stop.value) == (f"compare_official: {tmp_path / 'models/ours_xatt.py'} not found; --reference "
                               "must name a checkout of github.com/astra-vision/DenseMTL")


def test_the_script_asks_for_the_reference_before_measuring_anything():
    done = subprocess.run([sys.executable, str(BENCH / "compare_official.py"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--reference is required" in done.stderr.strip().splitlines()[-1]


def test_the_table_keeps_medians_over_rounds_and_compares_each_variant_with_the_official_code():
    cells = {("128x256", "train"): {
        "official": [_run(4.0, 3000.0, 3500.0, flops=576e9), _run(3.6, 3100.0, 3600.0)],
        "ours": [_run(2.0, 1500.0, 2000.0, flops=570e9), _run(1.6, 1700.0, 2200.0), _run(1.8, 1600.0, 2100.0)],
        "ours-bf16": [{"error": "timed out after 900 s"}],
    }}
    row = compare_official._summarise(cells, peaks={"bf16": 1000.0, "fp32": 500.0})["128x256 train"]
    official, ours = row["official"], row["ours"]
    assert official["step_s"] == 3.8 and official["peak_mem_mib"] == 3050.0
    assert official["gflop_per_s"] == round(576e9 / 3.8 / 1e9, 1)
    assert official["model_flop_utilisation"] == round(576e9 / 3.8 / 500e12, 4)
    assert "speedup_vs_official" not in official
    assert ours["step_s"] == 1.8 and ours["step_s_per_round"] == [2.0, 1.6, 1.8]
    assert ours["speedup_vs_official"] == round(3.8 / 1.8, 3)
    assert ours["memory_vs_official"] == round(1600.0 / 3050.0, 3)
    assert ours["total_memory_vs_official"] == round(2100.0 / 3550.0, 3)
    assert ours["gflop_per_s"] == round(570e9 / 1.8 / 1e9, 1)  # ours is credited with its own FLOP count
    assert row["ours-bf16"] == {"error": "timed out after 900 s"}


def test_a_bf16_variant_is_credited_with_the_float32_count_of_its_code_against_the_bf16_peak():
    cells = {("512x1024", "train"): {"official": [_run(0.4, 10.0, 20.0, flops=9.2e12)],
                                     "official-bf16": [_run(0.2, 8.0, 16.0)]}}
    row = compare_official._summarise(cells, peaks={"bf16": 1000.0, "fp32": 500.0})["512x1024 train"]
    assert row["official-bf16"]["gflop_per_s"] == round(9.2e12 / 0.2 / 1e9, 1)
    assert row["official-bf16"]["model_flop_utilisation"] == round(9.2e12 / 0.2 / 1000e12, 4)
    assert row["official-bf16"]["speedup_vs_official"] == 2.0


def test_without_a_bf16_peak_the_bf16_variants_get_no_utilisation_and_fp32_still_does():
    cells = {("128x256", "train"): {"official": [_run(3.0, 10.0, 20.0, flops=580e9)],
                                    "official-bf16": [_run(2.0, 8.0, 16.0)]}}
    row = compare_official._summarise(cells, peaks={"bf16": None, "fp32": 0.5})["128x256 train"]
    assert row["official"]["model_flop_utilisation"] == round(580e9 / 3.0 / 0.5e12, 4)
    assert "model_flop_utilisation" not in row["official-bf16"]
    assert row["official-bf16"]["gflop_per_s"] == round(580e9 / 2.0 / 1e9, 1)


def test_the_peak_is_given_on_the_command_line_or_measured_on_the_cpu(monkeypatch):
    assert compare_official._peak_tflops(compare_official.torch.device("cpu"), 2.5) == {"bf16": 2.5, "fp32": 2.5}
    monkeypatch.setattr(compare_official, "cpu_peak_tflops", lambda: {"fp32": 0.4, "bf16": None, "measured_by": "x"})
    assert compare_official._peak_tflops(compare_official.torch.device("cpu"), None)["fp32"] == 0.4
