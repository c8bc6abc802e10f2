"""Tests for densemtl_lab.models.xtam: parameter count, branches, the two attention paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from densemtl_lab.models.xtam import (
    XTAM,
    CorrelationBranch,
    SelfAttentionBranch,
    XTAMConfig,
    XTAMConfigError,
)

C = 16


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _set_alpha(module: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("alpha"):
                param.copy_(torch.randn(param.shape, generator=generator))


def _reference_correlation(branch: CorrelationBranch, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """The official SxTAM forward, restated: (b, hw_x, c) @ (b, c, hw_y), softmax, transposed."""
    ds = branch.ds
    x_ = nn.Upsample(scale_factor=1 / ds)(x)
    b = branch.query(x_).flatten(2).transpose(1, 2)
    c = branch.key(nn.MaxPool2d(ds, ds)(y)).flatten(2)
    d = branch.value(nn.MaxPool2d(ds, ds)(y))
    corr = torch.softmax(b @ c / math.sqrt(b.size(2)), dim=-1).transpose(1, 2)
    out = nn.Upsample(scale_factor=ds)((d.flatten(2) @ corr).view_as(x_))
    return out * branch.alpha, corr.transpose(1, 2)


def test_paper_pair_parameter_count() -> None:
    # extractor 147,584 + SA 147,456 + correlation 50,048 + fusion 24,832 (docs/faithfulness.md)
    with torch.device("meta"):
        xtam = XTAM(128)
    assert _count(xtam.extractor) == 147_584
    assert _count(xtam.self_attention) == 147_456
    assert _count(xtam.correlation) == 50_048
    assert _count(xtam.fusion) == 24_832
    assert _count(xtam) == 369_920


@pytest.mark.parametrize("ds", [1, 2, 4])
def test_correlation_matches_the_reference_formula(ds: int) -> None:
    torch.manual_seed(0)
    branch = CorrelationBranch(C, ds)
    _set_alpha(branch)
    x, y = torch.randn(2, C, 8, 16), torch.randn(2, C, 8, 16)
    out, attention = branch(x, y, return_attention=True)
    expected_out, expected_attention = _reference_correlation(branch, x, y)
    assert torch.allclose(out, expected_out, atol=1e-5)
    assert torch.allclose(attention, expected_attention, atol=1e-6)


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: the fused attention kernels of the fast path")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("ds", [1, 2, 4])
def test_fast_and_inspectable_paths_agree_with_gradients(ds: int, device: str) -> None:
    torch.manual_seed(1)
    xtam = XTAM(C, XTAMConfig(ds=ds)).to(device)
    _set_alpha(xtam, seed=ds)
    target, source = torch.randn(2, C, 16, 16, device=device), torch.randn(2, C, 16, 16, device=device)

    def run(fast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        xtam.zero_grad()
        inputs = [target.clone().requires_grad_(), source.clone().requires_grad_()]
        out = xtam(*inputs) if fast else xtam.inspect(*inputs).directional
        (out * torch.linspace(-1, 1, out.numel(), device=device).view_as(out)).mean().backward()
        return out.detach(), [t.grad for t in inputs] + [p.grad.clone() for p in xtam.parameters()]

    fast_out, fast_grads = run(fast=True)
    slow_out, slow_grads = run(fast=False)
    assert torch.allclose(fast_out, slow_out, atol=1e-5)
    for fast, slow in zip(fast_grads, slow_grads):
        assert torch.allclose(fast, slow, atol=1e-5)
    assert xtam.correlation.alpha.grad.abs().sum() > 0


def test_inspection_shapes_and_softmax_rows() -> None:
    xtam = XTAM(C, XTAMConfig(ds=2))
    inspection = xtam.inspect(torch.randn(3, C, 8, 12), torch.randn(3, C, 8, 12))
    assert inspection.grid == (4, 6)
    assert inspection.attention.shape == (3, 24, 24)
    assert torch.allclose(inspection.attention.sum(-1), torch.ones(3, 24), atol=1e-6)
    assert inspection.self_attention.shape == (3, C // 2, 8, 12)
    assert inspection.correlation.shape == inspection.directional.shape == (3, C, 8, 12)


def test_alpha_starts_at_zero_so_the_branch_is_off() -> None:
    branch = CorrelationBranch(C, 2)
    assert branch.alpha.shape == (1, C, 1, 1)
    out, _ = branch(torch.randn(1, C, 4, 4), torch.randn(1, C, 4, 4))
    assert torch.all(out == 0)


def test_zero_queries_average_the_values_by_hand() -> None:
    """Q = 0 makes every score equal, so A = 1/N and every output is the mean value vector."""
    branch = CorrelationBranch(2, ds=1, alpha=False).eval()
    with torch.no_grad():
        branch.query[0].weight.zero_()
        branch.value[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))  # V = ReLU(BN_eval(g)) ~ ReLU(g)
    source = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[-1.0, 2.0], [0.0, 6.0]]]])
    out, attention = branch(torch.randn(1, 2, 2, 2), source, return_attention=True)
    assert torch.allclose(attention, torch.full((1, 4, 4), 0.25))
    scale = 1 / math.sqrt(1 + branch.value[1].eps)
    expected = torch.tensor([16.0 / 4, 8.0 / 4]) * scale  # mean of ReLU: (1+3+5+7)/4, (0+2+0+6)/4
    assert torch.allclose(out[0], expected.view(2, 1, 1).expand(2, 2, 2), atol=1e-6)


def test_self_attention_with_a_closed_gate_halves_the_conv() -> None:
    branch = SelfAttentionBranch(C, C // 2)
    with torch.no_grad():
        branch.gate.weight.zero_()  # sigmoid(0) = 1/2 everywhere
    x = torch.randn(1, C, 5, 5)
    assert torch.allclose(branch(x), 0.5 * branch.conv(x), atol=1e-6)


@pytest.mark.parametrize(
    "config, fused_in",
    [
        (XTAMConfig(), C // 2 + C),
        (XTAMConfig(self_attention=False), C),
        (XTAMConfig(correlation=False), C // 2),
        (XTAMConfig(full_sa=True), 2 * C),
    ],
)
def test_ablation_switches_set_the_fusion_width(config: XTAMConfig, fused_in: int) -> None:
    xtam = XTAM(C, config)
    assert xtam.fusion[0].in_channels == fused_in
    assert (xtam.self_attention is None) == (not config.self_attention)
    assert (xtam.correlation is None) == (not config.correlation)
    assert xtam(torch.randn(1, C, 8, 8), torch.randn(1, C, 8, 8)).shape == (1, C, 8, 8)


def test_no_alpha_leaves_the_correlation_unscaled() -> None:
    xtam = XTAM(C, XTAMConfig(alpha=False))
    assert xtam.correlation.alpha is None
    inspection = xtam.inspect(torch.randn(1, C, 8, 8), torch.randn(1, C, 8, 8))
    assert inspection.correlation.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [({"self_attention": False, "correlation": False}, "no branch"), ({"ds": 0}, "xtam_ds")],
)
def test_bad_configs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(XTAMConfigError, match=message):
        XTAMConfig(**kwargs)


def test_sizes_not_divisible_by_ds_are_refused() -> None:
    xtam = XTAM(C, XTAMConfig(ds=4))
    with pytest.raises(XTAMConfigError, match="divisible by xtam_ds=4"):
        xtam(torch.randn(1, C, 6, 8), torch.randn(1, C, 6, 8))


def test_fast_path_uses_the_fused_cpu_kernel_forward_and_backward() -> None:
    branch = CorrelationBranch(C, ds=2)
    target = torch.randn(2, C, 8, 8, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        out, attention = branch(target, torch.randn(2, C, 8, 8))
        out.sum().backward()
    ops = {event.name for event in profiler.events()}
    assert attention is None
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in ops
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in ops
    assert "aten::_scaled_dot_product_attention_math" not in ops
