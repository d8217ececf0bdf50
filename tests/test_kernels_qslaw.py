"""QSLAW fake quantization: fused autograd function vs the reference, hand-derived gradient of s."""

import pytest
import torch

from qslaw_pipe.kernels.qslaw import QslawLinearFunction, qslaw_reference
from qslaw_pipe.kernels.quant import fake_quant, rtn_qparams, to_groups


def _setup(out=6, k=40, gs=16, bits=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, k, generator=g)
    delta, zp = rtn_qparams(w, bits, gs)
    delta = delta * 0.8  # clip some codes so the clamp branch is exercised
    s = (1 + 0.05 * torch.randn(delta.shape, generator=g)).requires_grad_(True)
    return w, s, delta, zp, bits, gs


def test_scale_one_equals_calibrated_fake_quant():
    w, _, delta, zp, bits, gs = _setup()
    ref = qslaw_reference(w, torch.ones_like(delta), delta, zp, bits, gs)
    assert torch.equal(ref, fake_quant(w, delta, zp, bits, gs))


@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_fused_function_matches_reference_forward_and_backward(compiled, keep):
    w, s, delta, zp, bits, gs = _setup()
    x = torch.randn(3, 5, w.shape[1], requires_grad=True)
    bias = torch.randn(w.shape[0])
    y_ref = torch.nn.functional.linear(x, qslaw_reference(w, s, delta, zp, bits, gs), bias)
    gy = torch.randn_like(y_ref)
    gx_ref, gs_ref = torch.autograd.grad(y_ref, (x, s), gy)
    y = QslawLinearFunction.apply(
        x, s, to_groups(w, gs), delta, zp.float(), bias, bits, w.shape[1], compiled, keep
    )
    gx, g_s = torch.autograd.grad(y, (x, s), gy)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_s, gs_ref, rtol=1e-4, atol=1e-5)
    assert g_s.abs().sum() > 0


def test_keeping_weights_from_forward_gives_the_lean_values():
    """keep=True (W_q and coefficients saved in forward) vs keep=False (recomputed in backward)."""
    w, s, delta, zp, bits, gs = _setup(out=8, k=48, gs=16)
    x = torch.randn(4, w.shape[1], requires_grad=True)
    gy = torch.randn(4, w.shape[0])
    out = []
    for keep in (False, True):
        y = QslawLinearFunction.apply(
            x, s, to_groups(w, gs), delta, zp.float(), None, bits, w.shape[1], False, keep
        )
        out.append((y, *torch.autograd.grad(y, (x, s), gy)))
    for lean, kept in zip(*out, strict=True):
        torch.testing.assert_close(kept, lean, rtol=1e-6, atol=0)


def test_scale_gradient_matches_hand_derivation():
    """d L / d s[o, g] = sum_j dL/dWq[o, j] * (-W[o, j] / s^2) over unclamped j of group g (STE)."""
    w, s, delta, zp, bits, gs = _setup(out=3, k=32, gs=16)
    gw = torch.randn_like(w)
    (qslaw_reference(w, s, delta, zp, bits, gs) * gw).sum().backward()
    pre = (
        torch.round(to_groups(w, gs) / s.detach().unsqueeze(-1) / delta.unsqueeze(-1))
        + zp.unsqueeze(-1).float()
    )
    inside = (pre >= 0) & (pre <= 15)
    hand = (to_groups(gw, gs) * -to_groups(w, gs) / s.detach().unsqueeze(-1) ** 2 * inside).sum(-1)
    torch.testing.assert_close(s.grad, hand, rtol=1e-5, atol=1e-6)
    assert (~inside).any() and inside.any()


def test_scale_gradient_agrees_with_finite_difference_of_the_unrounded_map():
    """STE is the derivative of the map with round() removed and the clamp mask held at its rounded value."""
    w, s, delta, zp, bits, gs = _setup(out=2, k=16, gs=16)
    base = s.detach().double()
    pre = torch.round(
        to_groups(w.double(), gs) / base.unsqueeze(-1) / delta.double().unsqueeze(-1)
    ) + zp.unsqueeze(-1)
    inside = (pre >= 0) & (pre <= 15)

    def smooth(scales):
        codes = to_groups(w.double(), gs) / scales.unsqueeze(-1) / delta.double().unsqueeze(-1)
        return (delta.double().unsqueeze(-1) * codes * inside).sum()

    (qslaw_reference(w, s, delta, zp, bits, gs)).sum().backward()
    eps = 1e-6
    for o in range(2):
        bumped = base.clone()
        bumped[o, 0] += eps
        fd = (smooth(bumped) - smooth(base)) / eps
        assert abs(fd.item() - s.grad[o, 0].item()) < 1e-3 * max(1.0, abs(fd.item()))
