"""Tests for densemtl_lab.models.activation: the decoders' ELU against torch's on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from densemtl_lab.models.activation import ELU


def _reference(x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.detach().requires_grad_()
    out = F.elu(leaf * 1.0, inplace=True)
    out.backward(upstream)
    return out.detach(), leaf.grad


def _ours(x: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.detach().requires_grad_()
    out = ELU()(leaf * 1.0)
    out.backward(upstream)
    return out.detach(), leaf.grad


def test_float64_output_and_gradient_match_torch() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64) * 4
    x[0, 0, 0, :3] = torch.tensor([0.0, -1e-9, 1e-9], dtype=torch.float64)
    upstream = torch.randn_like(x)
    (want, want_grad), (got, got_grad) = _reference(x, upstream), _ours(x, upstream)
    assert torch.allclose(got, want, rtol=0, atol=1e-15)
    assert torch.allclose(got_grad, want_grad, rtol=0, atol=1e-15)  # torch's elu_backward, from the output


def test_float32_differs_from_expm1_by_at_most_one_rounding_near_zero() -> None:
    torch.manual_seed(1)
    x = torch.cat([torch.randn(4096) * 3, -torch.logspace(-8, 1, 512), torch.logspace(-8, 1, 512)])
    upstream = torch.randn_like(x)
    (want, want_grad), (got, got_grad) = _reference(x, upstream), _ours(x, upstream)
    assert torch.equal(got[x > 0], x[x > 0])
    assert (got - want).abs().max() <= 6e-8
    assert torch.allclose(got_grad, want_grad, rtol=0, atol=1e-6)


def test_bfloat16_is_computed_in_float32_and_rounded_once() -> None:
    torch.manual_seed(2)
    x = (torch.randn(8, 16, 9, 11) * 2).bfloat16().contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(x)
    (want, want_grad), (got, got_grad) = _reference(x, upstream), _ours(x, upstream)
    assert got.dtype == torch.bfloat16 and got.is_contiguous(memory_format=torch.channels_last)
    # exp(x) - 1 in bf16 would round every |x| < 2e-3 to 0; in float32 it is off by at most 6e-8.
    small = -torch.logspace(-6, -3, 64).bfloat16()
    got_small = ELU()(small.clone())
    assert (got_small < 0).all() and (got_small.float() - F.elu(small).float()).abs().max() <= 6e-8
    assert (got.float() - want.float()).abs().max() <= 2**-8
    assert (got != want).float().mean() < 1e-3
    assert torch.equal(got_grad, want_grad)


def test_non_finite_values_come_out_as_torch_gives_them() -> None:
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    assert torch.equal(ELU()(x.clone()).nan_to_num(nan=7.0), F.elu(x).nan_to_num(nan=7.0))


def test_it_works_in_place_and_under_inference_mode() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 3.0])
    with torch.inference_mode():
        out = ELU()(x)
    assert out.data_ptr() == x.data_ptr()
    assert torch.allclose(out, torch.tensor([-0.8646647, -0.3934693, 0.0, 3.0]), atol=1e-7)


def test_it_is_an_nn_elu_with_the_same_settings() -> None:
    module = ELU()
    assert isinstance(module, torch.nn.ELU) and module.alpha == 1.0 and module.inplace
    assert not list(module.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (off the CPU it is nn.ELU)")
def test_off_the_cpu_it_is_torchs_elu() -> None:
    x = torch.randn(1000, device="cuda")
    assert torch.equal(ELU()(x.clone()), F.elu(x))
