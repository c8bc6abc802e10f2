"""Tests for densemtl_lab.models.mteb: sizes, canonical order, the three fusion modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from densemtl_lab.models.mteb import ExchangeConfigError, MultiTaskExchangeBlock, pair_name
from densemtl_lab.models.xtam import XTAMConfig

C = 8
TASKS3 = ("semseg", "depth", "normals")


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _features(tasks=TASKS3, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {t: torch.randn(2, C, 8, 8, generator=generator) for t in tasks}


@pytest.mark.parametrize(
    "tasks, total, per_projection",
    [("SD", 773_120, 16_640), ("SDN", 2_318_592, 33_024), ("SDNE", 4_636_672, 49_408)],
)
def test_paper_block_parameter_counts(tasks: str, total: int, per_projection: int) -> None:
    with torch.device("meta"):
        block = MultiTaskExchangeBlock(tasks, 128)
    assert _count(block) == total
    assert all(_count(p) == per_projection for p in block.fuse.values())


def test_replace_mode_projects_all_tasks() -> None:
    with torch.device("meta"):
        block = MultiTaskExchangeBlock("SDN", 128, mode="replace")
    assert block.fuse["depth"][0].in_channels == 3 * 128


def test_pairs_and_concatenation_follow_the_canonical_order() -> None:
    block = MultiTaskExchangeBlock(["normals", "depth", "semseg"], C).eval()
    assert block.tasks == TASKS3
    assert block.sources("normals") == ("semseg", "depth")
    features = _features()
    seen = {}
    block.fuse["normals"].register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    with torch.no_grad():
        block(features)
        expected = torch.cat(
            [block.xtams[pair_name("normals", s)](features["normals"], features[s]) for s in ("semseg", "depth")],
            dim=1,
        )
    assert torch.equal(seen["x"], expected)


@pytest.mark.parametrize("mode", ["add", "prod", "replace"])
def test_modes_with_a_silent_projection(mode: str) -> None:
    """P_i(...) = ReLU(BN_eval(0)) = 0: add keeps f_i, prod and replace give 0."""
    block = MultiTaskExchangeBlock("SD", C, mode=mode).eval()
    for projection in block.fuse.values():
        nn.init.zeros_(projection[0].weight)
    features = _features(("semseg", "depth"))
    with torch.no_grad():
        refined = block(features)
    for task, feature in features.items():
        expected = feature if mode == "add" else torch.zeros_like(feature)
        assert torch.equal(refined[task], expected)


def test_inspect_refines_like_forward() -> None:
    block = MultiTaskExchangeBlock("SDN", C, XTAMConfig(ds=2)).eval()
    for xtam in block.xtams.values():
        nn.init.constant_(xtam.correlation.alpha, 0.5)
    features = _features()
    with torch.no_grad():
        fast = block(features)
        slow, inspection = block.inspect(features)
    assert list(inspection) == list(block.pairs)
    for task in TASKS3:
        assert torch.allclose(fast[task], slow[task], atol=1e-5)


@pytest.mark.parametrize("tasks, mode, message", [("S", "add", "at least two"), ("SD", "sum", "exchange_mode")])
def test_bad_blocks_are_refused(tasks: str, mode: str, message: str) -> None:
    with pytest.raises(ExchangeConfigError, match=message):
        MultiTaskExchangeBlock(tasks, C, mode=mode)
