"""Uniform asymmetric group-wise quantization with integer zero points, straight-through rounding.

Layout: a weight W [out, in] is cut along `in` into groups of `group_size` consecutive inputs; the
last group may be shorter when `in % group_size != 0` (576 = 4 x 128 + 64). Per group: step `delta`
[out, n_groups] (fp32) and zero point `zp` [out, n_groups] (integers in [0, 2^bits - 1]).

    codes = clamp(round(W / delta) + zp, 0, 2^bits - 1)          (QSLAW eq. 8 with s = 1)
    W_q   = delta * (codes - zp)

Shorter last groups are handled by edge padding: the pad repeats the group's last column, so min,
max and codes of the real columns are unchanged, and the pad is cut off again.
"""

import math

import torch


def n_groups(in_features: int, group_size: int) -> int:
    return math.ceil(in_features / group_size)


def to_groups(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] -> [out, n_groups, group_size], edge-padding a short last group."""
    out, k = w.shape
    pad = n_groups(k, group_size) * group_size - k
    if pad:
        w = torch.cat([w, w[:, -1:].expand(out, pad)], dim=1)
    return w.reshape(out, -1, group_size)


def from_groups(g: torch.Tensor, in_features: int) -> torch.Tensor:
    """[out, n_groups, group_size] -> [out, in], dropping padding."""
    return g.reshape(g.shape[0], -1)[:, :in_features]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity gradient backward."""
    return (x.round() - x).detach() + x


def minmax_qparams(wmin: torch.Tensor, wmax: torch.Tensor, bits: int, ste: bool = False):
    """delta = (max - min) / (2^bits - 1), zp = round(-min / delta); min <= 0 <= max is not required."""
    qmax = 2**bits - 1
    delta = ((wmax - wmin) / qmax).clamp(min=1e-8)
    rnd = round_ste if ste else torch.round
    zp = rnd(-wmin / delta).clamp(0, qmax)
    return delta, zp


def rtn_qparams(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max round-to-nearest qparams: delta fp32 [out, n_groups], zp uint8 [out, n_groups]."""
    g = to_groups(w.float(), group_size)
    delta, zp = minmax_qparams(g.amin(-1), g.amax(-1), bits)
    return delta, zp.to(torch.uint8)


def fake_quant_groups(g: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, bits: int) -> torch.Tensor:
    """Grouped fake quantization with straight-through rounding; g [out, n_groups, group_size]."""
    d, z = delta.unsqueeze(-1), zp.unsqueeze(-1).to(g.dtype)
    codes = torch.clamp(round_ste(g / d) + z, 0, 2**bits - 1)
    return d * (codes - z)


def fake_quant(
    w: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, bits: int, group_size: int
) -> torch.Tensor:
    """W_q for W [out, in] under (delta, zp); differentiable through W and delta (STE)."""
    return from_groups(fake_quant_groups(to_groups(w, group_size), delta, zp, bits), w.shape[1])


def quantize_codes(
    w: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, bits: int, group_size: int
) -> torch.Tensor:
    """Integer codes uint8 [out, in]."""
    g = to_groups(w.float(), group_size)
    codes = torch.clamp(torch.round(g / delta.unsqueeze(-1)) + zp.unsqueeze(-1).float(), 0, 2**bits - 1)
    return from_groups(codes, w.shape[1]).to(torch.uint8)


def dequantize_codes(
    codes: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, group_size: int
) -> torch.Tensor:
    """fp32 [out, in] from uint8 codes [out, in] and per-group delta, zp."""
    g = to_groups(codes.float(), group_size)
    return from_groups(delta.unsqueeze(-1) * (g - zp.unsqueeze(-1).float()), codes.shape[1])


def fake_quant_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Activations x [..., features] fake-quantized per token (one asymmetric min-max range per row),
    as W4A8-style simulations quantize a Linear's input; computed in fp32, returned in x's dtype."""
    xf = x.float()
    lo, hi = xf.amin(-1, keepdim=True).clamp(max=0), xf.amax(-1, keepdim=True).clamp(min=0)
    delta = ((hi - lo) / (2**bits - 1)).clamp_min(1e-8)
    zp = torch.round(-lo / delta)
    q = torch.clamp(torch.round(xf / delta) + zp, 0, 2**bits - 1)
    return (delta * (q - zp)).to(x.dtype)


def block_size(group_size: int, in_features: int) -> int:
    """The block a layout of one group size per tensor can use for groups of `group_size` over `in_features`
    inputs (a short last group included): their gcd."""
    return math.gcd(group_size, in_features)


def repeat_groups(t: torch.Tensor, group_size: int, block: int, in_features: int) -> torch.Tensor:
    """[out, n_groups] per group -> [out, in / block] per block (each group's value repeated)."""
    reps = group_size // block
    return t.repeat_interleave(reps, dim=1)[:, : in_features // block].contiguous()
