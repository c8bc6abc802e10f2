"""Process groups and the data order: samplers by hand, and a real two-process DDP run with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densemtl_lab.config import get_profile
from densemtl_lab.distributed import (
    EpochSampler, ProcessContext, ShardSampler, all_reduce_mean, init_from_env, process_device,
)
from densemtl_lab.train import Trainer

HELPER = Path(__file__).parent / "helpers" / "ddp_train.py"


def test_without_torchrun_there_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_from_env("cpu")
    assert (context.rank, context.world_size, context.enabled, context.is_main) == (0, 1, False, True)
    assert process_device(context, "cpu") == torch.device("cpu")
    values = torch.tensor([2.0, 4.0])
    assert torch.equal(all_reduce_mean(values, context), torch.tensor([2.0, 4.0]))


def test_one_pass_is_a_permutation_cut_to_whole_batches():
    sampler = EpochSampler(length=10, batch_size=3, seed=0)
    order = list(sampler)
    assert sampler.batches_per_epoch == 3 and len(order) == len(sampler) == 9
    assert len(set(order)) == 9 and set(order) <= set(range(10))  # drop_last: one sample left out


def test_passes_are_reshuffled_and_reproducible_from_the_seed():
    sampler = EpochSampler(length=50, batch_size=5, seed=3)
    first = list(sampler)
    sampler.set_position(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    again = EpochSampler(length=50, batch_size=5, seed=3)
    again.set_position(1)
    assert list(again) == second
    other_seed = EpochSampler(length=50, batch_size=5, seed=4)
    assert list(other_seed) != first


def test_skipping_batches_resumes_in_the_middle_of_a_pass():
    sampler = EpochSampler(length=20, batch_size=4, seed=1)
    sampler.set_position(2)
    full = list(sampler)
    sampler.set_position(2, skip=3)
    assert list(sampler) == full[12:] and len(sampler) == 8


def test_ranks_get_disjoint_shares_of_every_global_batch():
    ranks = [EpochSampler(20, 3, seed=5, context=ProcessContext(rank, 2)) for rank in range(2)]
    shares = [list(sampler) for sampler in ranks]
    assert ranks[0].batches_per_epoch == 3  # 20 // (3 x 2)
    assert len(shares[0]) == len(shares[1]) == 9 and not set(shares[0]) & set(shares[1])
    single = EpochSampler(20, 6, seed=5)
    assert sorted(shares[0] + shares[1]) == sorted(single)  # the same 18 samples as one process


def test_too_small_a_split_is_refused():
    with pytest.raises(ValueError, match="fewer than one batch of train.batch_size=4 x 2 process"):
        EpochSampler(7, 4, seed=0, context=ProcessContext(0, 2))


def test_evaluation_shards_cover_every_index_once():
    shards = [list(ShardSampler(7, ProcessContext(rank, 3))) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]


def _torchrun_smoke(out: Path, *assignments: str) -> list[dict]:
    """Train the smoke profile in two gloo processes (tests/helpers/ddp_train.py); each rank's weights."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(HELPER), str(out), *assignments],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    return weights


@pytest.mark.slow
def test_torchrun_two_gloo_processes_end_with_identical_weights(tmp_path):
    _torchrun_smoke(tmp_path)
    seen = [json.loads((tmp_path / f"seen{rank}.json").read_text()) for rank in range(2)]
    assert seen[0]["world_size"] == 2
    assert len(seen[0]["names"]) == len(seen[1]["names"]) == 3 * 2  # 3 steps x batch 2 per rank
    assert not set(seen[0]["names"]) & set(seen[1]["names"])  # one pass: the ranks see other samples
    assert seen[0]["metrics"] == seen[1]["metrics"]  # evaluation statistics summed over both ranks
    # gradient conflicts of step 2 only, averaged over the ranks: the same numbers on both
    assert [bool(row) for row in seen[0]["conflicts"]] == [False, True, False]
    assert seen[0]["conflicts"] == seen[1]["conflicts"] and seen[0]["conflicts"][1]["grad_norm/semseg"] > 0
    run = tmp_path / "run"
    assert [p.name for p in (run / "checkpoints").glob("step_*.pt")] == ["step_0000003.pt"]
    history = json.loads((run / "history.json").read_text())
    assert [row["step"] for row in history["steps"]] == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("aggregator", ["mgda", "upgrad"])
def test_an_aggregator_under_torchrun_takes_the_same_step_on_every_rank(tmp_path, aggregator):
    # each rank sees other samples: without the all-reduce of the Jacobians the weights would drift apart
    weights = _torchrun_smoke(tmp_path, f"train.aggregator={aggregator}")
    start = Trainer(get_profile("smoke", quiet=True, device="cpu")).model.state_dict()  # the same seeded start
    assert any(not torch.equal(weights[0][key], start[key]) for key in start if key.startswith("encoder."))
