"""Tests of densemtl_lab.notebook.start: the session a lesson opens (the lessons themselves: tests/test_nb_*.py)."""

from __future__ import annotations

import pytest

from densemtl_lab import notebook
from densemtl_lab.train import RunDirError


def test_a_cpu_session_keeps_large_buffers_mapped_and_names_a_bad_seed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("densemtl_lab.notebook.tune_cpu_allocator", lambda: calls.append("tuned") or True)
    lab = notebook.start("00_test", profile="smoke", device="cpu", seed="3", output_dir=str(tmp_path))
    assert calls == ["tuned"] and lab.seed == 3 and lab.device.type == "cpu"
    with pytest.raises(notebook.NotebookError, match=r"SEED='three' must be a whole number"):
        notebook.start("00_test", profile="smoke", device="cpu", seed="three", output_dir=str(tmp_path))


def test_a_finished_run_is_loaded_again_only_for_the_same_settings(tmp_path):
    lab = notebook.start("00_test", profile="smoke", device="cpu", output_dir=str(tmp_path))
    first = lab.train_or_load("mtl", "SD")
    again = lab.train_or_load("mtl", "SD")
    assert first.trained_now and not again.trained_now and again.run_dir == first.run_dir
    assert again.metrics == first.metrics
    with pytest.raises(RunDirError, match=r"config differs in optim\.lr"):
        lab.train_or_load("mtl", "SD", lr=0.5)  # same folder, other settings: not silently the old run
