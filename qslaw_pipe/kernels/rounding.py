"""Learned rounding (SignRound, Cheng et al. 2023; AutoRound's weight-only form), asymmetric int-k.

Per weight, an offset V (init 0) added before rounding; per group, min/max scales in [0, 1] (init 1) shrinking
the range the qparams come from:
    delta = (s_max * max(W_g) - s_min * min(W_g)) / (2^k - 1),   zp = round(-s_min * min(W_g) / delta)
    W_q   = delta * (clamp(round(W / delta + V) + zp, 0, 2^k - 1) - zp)
Sign gradient descent with a rate of 1/steps decaying linearly to 0 moves V by at most 0.5 in all.

`export` hands over what the calibrate record keeps: delta, zp, and the adjusted weight W' the learned codes
round from at scale 1, stored as fp16: W' = delta * (round(x) + f), x = W / delta + V, with f = x - round(x)
kept inside [-MARGIN, MARGIN] so that W' rounds to the same codes in fp16, bf16 or fp32 (checked).
"""

import torch
from torch import nn

from qslaw_pipe.kernels.quant import from_groups, minmax_qparams, round_ste, to_groups

MARGIN = 0.4


class RoundingQuantizer(nn.Module):
    """Learnable rounding offsets and range scales for one weight W [out, in] (not itself a parameter)."""

    def __init__(self, weight: torch.Tensor, bits: int, group_size: int):
        super().__init__()
        self.bits, self.group_size, self.in_features = bits, group_size, weight.shape[1]
        groups = to_groups(weight.detach().float(), group_size)
        self.register_buffer("gmax", groups.amax(-1), persistent=False)
        self.register_buffer("gmin", groups.amin(-1), persistent=False)
        self.offset = nn.Parameter(torch.zeros_like(groups))
        self.max_scale = nn.Parameter(torch.ones_like(self.gmax))
        self.min_scale = nn.Parameter(torch.ones_like(self.gmin))

    def qparams(self, ste: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return minmax_qparams(self.min_scale * self.gmin, self.max_scale * self.gmax, self.bits, ste=ste)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta, zp = self.qparams()
        d, z = delta.unsqueeze(-1), zp.unsqueeze(-1)
        x = to_groups(weight, self.group_size) / d + self.offset
        codes = torch.clamp(round_ste(x) + z, 0, 2**self.bits - 1)
        return from_groups(d * (codes - z), self.in_features)

    @torch.no_grad()
    def project_(self) -> None:
        """Keep the range scales in [0, 1] after a step (AutoRound's clamp)."""
        self.max_scale.clamp_(0, 1)
        self.min_scale.clamp_(0, 1)

    @torch.no_grad()
    def export(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """delta fp32, zero_point uint8 [out, n_groups] and the adjusted weight fp16 [out, in] (see above)."""
        delta, zp = self.qparams(ste=False)
        d, z = delta.unsqueeze(-1), zp.unsqueeze(-1)
        x = to_groups(weight.float(), self.group_size) / d + self.offset
        whole = x.round()
        codes = torch.clamp(whole + z, 0, 2**self.bits - 1)
        adjusted = (d * (whole + (x - whole).clamp(-MARGIN, MARGIN))).half()
        again = torch.clamp((adjusted.float() / d).round() + z, 0, 2**self.bits - 1)
        exact = torch.where(again == codes, adjusted, (d * (codes - z)).half())
        check = torch.clamp((exact.float() / d).round() + z, 0, 2**self.bits - 1)
        if not torch.equal(check, codes):
            raise AssertionError("an adjusted weight does not round to its learned code")
        return {
            "delta": delta.cpu().clone(),
            "zero_point": zp.to(torch.uint8).cpu().clone(),
            "weight": from_groups(exact, self.in_features).cpu().contiguous(),
        }
