"""Quantization math against slow, obvious references."""

import torch

from qslaw_pipe.kernels.lwc import ClippedQuantizer
from qslaw_pipe.kernels.quant import dequantize_codes, fake_quant, quantize_codes, rtn_qparams


def _reference_rtn(w, bits, gs):
    """Loop-per-group min-max reference, including a short last group."""
    out, k = w.shape
    qmax = 2**bits - 1
    deltas, zps, wq = [], [], torch.empty_like(w)
    for r in range(out):
        drow, zrow = [], []
        for start in range(0, k, gs):
            g = w[r, start : start + gs]
            d = max((g.max() - g.min()).item() / qmax, 1e-8)
            z = min(max(round(-g.min().item() / d), 0), qmax)
            for j in range(g.numel()):
                q = min(max(round(g[j].item() / d) + z, 0), qmax)
                wq[r, start + j] = d * (q - z)
            drow.append(d)
            zrow.append(z)
        deltas.append(drow)
        zps.append(zrow)
    return torch.tensor(deltas), torch.tensor(zps), wq


def test_rtn_matches_loop_reference_with_short_last_group():
    torch.manual_seed(0)
    w = torch.randn(5, 40)
    for bits, gs in [(4, 16), (3, 32), (2, 40), (8, 7)]:
        delta, zp = rtn_qparams(w, bits, gs)
        rd, rz, rwq = _reference_rtn(w, bits, gs)
        torch.testing.assert_close(delta, rd.float(), rtol=1e-6, atol=0)
        assert zp.tolist() == rz.tolist()
        torch.testing.assert_close(fake_quant(w, delta, zp, bits, gs), rwq, rtol=1e-5, atol=1e-6)


def test_codes_roundtrip_equals_fake_quant():
    torch.manual_seed(1)
    w = torch.randn(8, 100)
    delta, zp = rtn_qparams(w, 4, 32)
    codes = quantize_codes(w, delta, zp, 4, 32)
    assert codes.dtype == torch.uint8 and codes.max() <= 15
    torch.testing.assert_close(dequantize_codes(codes, delta, zp, 32), fake_quant(w, delta, zp, 4, 32))


def test_ste_gradient_is_identity_inside_range():
    w = torch.randn(4, 32, requires_grad=True)
    delta, zp = rtn_qparams(w.detach(), 8, 32)
    fake_quant(w, delta, zp, 8, 32).sum().backward()
    assert torch.all((w.grad == 1) | (w.grad == 0)) and w.grad.mean() > 0.9


def test_lwc_starts_near_full_range_and_shrinks_with_lower_logits():
    torch.manual_seed(2)
    w = torch.randn(6, 64)
    q = ClippedQuantizer(w, 4, 32)
    delta, _ = q.qparams(ste=False)
    rtn_delta, _ = rtn_qparams(w, 4, 32)
    assert torch.allclose(delta, rtn_delta * torch.sigmoid(torch.tensor(4.0)), rtol=1e-5)
    with torch.no_grad():
        q.upper.fill_(0.0)
        q.lower.fill_(0.0)
    assert torch.all(q.qparams(ste=False)[0] < delta)
    out = q(w)
    out.pow(2).sum().backward()
    assert q.upper.grad.abs().sum() > 0 and q.lower.grad.abs().sum() > 0
