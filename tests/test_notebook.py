"""Tests of densemtl_lab.notebook.start: the session a lesson opens (the lessons themselves: tests/test_nb_*.py)."""

from __future__ import annotations

import pytest

from densemtl_lab import notebook


def test_a_cpu_session_keeps_large_buffers_mapped_and_names_a_bad_seed(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("densemtl_lab.notebook.tune_cpu_allocator", lambda: calls.append("tuned") or True)
    lab = notebook.start("00_test", profile="smoke", device="cpu", seed="3", output_dir=str(tmp_path))
    assert calls == ["tuned"] and lab.seed == 3 and lab.device.type == "cpu"
    with pytest.raises(notebook.NotebookError, match=r"SEED='three' must be a whole number"):
        notebook.start("00_test", profile="smoke", device="cpu", seed="three", output_dir=str(tmp_path))
