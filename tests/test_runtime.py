"""Tests for densemtl_lab.runtime's CPU tuning: the allocator, releasing the heap, placing a model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from densemtl_lab.train import place_model

_GLIBC = sys.platform.startswith("linux")

_RELEASE = textwrap.dedent("""
    import torch
    from densemtl_lab.runtime import release_free_heap, tune_cpu_allocator

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    assert tune_cpu_allocator()
    blocks = [torch.ones(2**20) for _ in range(200)]  # 800 MiB in 4 MiB blocks: all from the heap now
    del blocks
    kept = rss_mib()
    released = release_free_heap()
    print(kept, rss_mib(), released)
""")


@pytest.mark.skipif(not _GLIBC, reason="malloc_trim and /proc are glibc/Linux features")
def test_releasing_the_heap_returns_what_the_tuned_allocator_kept():
    out = subprocess.run([sys.executable, "-c", _RELEASE], capture_output=True, text=True, check=True).stdout
    kept, after, released = out.split()
    assert float(kept) - float(after) > 600  # the tuned allocator had kept the freed blocks mapped
    assert released == "True"


def test_placing_a_model_on_the_cpu_in_channels_last_changes_its_conv_weights_only():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    assert place_model(model, torch.device("cpu"), channels_last=True) is model
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model[0].weight.is_contiguous()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
