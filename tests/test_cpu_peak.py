"""Tests of bench/cpu_peak.py: the CPU's measured ceiling that the benches divide attained FLOP/s by."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import cpu_peak  # noqa: E402


def test_a_convolutions_rate_is_its_flop_count_over_its_best_time(monkeypatch):
    clock = iter([0.0, 0.4, 1.0, 1.2, 2.0, 2.8])  # three timings of 2 calls: 0.4, 0.2 and 0.8 s
    monkeypatch.setattr(cpu_peak.time, "perf_counter", lambda: next(clock))
    rate = cpu_peak.convolution_tflops(torch.float32, channels=8, side=4, batch=1, repeats=3, calls=2)
    assert rate == pytest.approx(2 * 8 * 8 * 9 * 4 * 4 / 0.1 / 1e12)  # the best time: 0.2 s for 2 calls


def test_the_measured_peak_is_positive_and_bf16_only_where_the_cpu_has_it(monkeypatch):
    monkeypatch.setattr(cpu_peak, "SHAPES", ((16, 8, 1),))
    monkeypatch.setattr(cpu_peak, "native_cpu_bf16", lambda: False)
    peaks = cpu_peak.cpu_peak_tflops()
    assert peaks["fp32"] > 0 and math.isfinite(peaks["fp32"]) and peaks["bf16"] is None
    assert "(16, 8, 1)" in peaks["measured_by"]


def test_combining_measurements_keeps_the_best_of_each_precision():
    first = {"fp32": 0.40, "bf16": 0.90, "measured_by": "3x3"}
    second = {"fp32": 0.45, "bf16": None, "measured_by": "3x3"}
    combined = cpu_peak.combine(first, second)
    assert combined["fp32"] == 0.45 and combined["bf16"] == 0.90
    assert combined["measurements"] == [{"fp32": 0.40, "bf16": 0.90}, {"fp32": 0.45, "bf16": None}]
    assert cpu_peak.combine(second)["bf16"] is None
