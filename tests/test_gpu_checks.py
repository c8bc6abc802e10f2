"""Tests of bench/gpu_checks.sh, the one-call GPU session: what it says where it cannot run.

The checks themselves need a CUDA GPU, which CI never has (docs/benchmarks.md, "On a GPU in one call").
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_checks.sh"


def test_without_its_two_arguments_it_prints_the_usage():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "usage: bash bench/gpu_checks.sh REFERENCE OUT" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a machine with a CUDA GPU the script runs its checks")
def test_without_a_gpu_it_stops_in_one_line_before_any_stage(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "reference"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip() == f"gpu_checks: {sys.executable}'s torch sees no CUDA GPU; run this on a machine with one"
    assert list((tmp_path / "out").iterdir()) == []
