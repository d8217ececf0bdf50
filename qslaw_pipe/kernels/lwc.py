"""OmniQuant learnable weight clipping (Shao et al., ICLR 2024, sec. 3.2, eq. 2), weight-only.

Per group, clipping strengths gamma, beta in (0, 1) through a sigmoid shrink the range:
    max' = sigmoid(gamma_logit) * max(W_g),  min' = sigmoid(beta_logit) * min(W_g)
    delta = (max' - min') / (2^k - 1),        zp = -round(min' / delta)
Logits start at 4.0 (sigmoid = 0.982: near full range), as in OmniQuant's code.
"""

import torch
from torch import nn

from qslaw_pipe.kernels.quant import fake_quant_groups, from_groups, minmax_qparams, to_groups

INIT_LOGIT = 4.0


class ClippedQuantizer(nn.Module):
    """Learnable per-group clipping for one weight W [out, in]; the weight itself is not a parameter."""

    def __init__(self, weight: torch.Tensor, bits: int, group_size: int, init_logit: float = INIT_LOGIT):
        super().__init__()
        self.bits, self.group_size, self.in_features = bits, group_size, weight.shape[1]
        groups = to_groups(weight.detach().float(), group_size)
        self.register_buffer("gmax", groups.amax(-1), persistent=False)
        self.register_buffer("gmin", groups.amin(-1), persistent=False)
        self.upper = nn.Parameter(torch.full_like(self.gmax, init_logit))
        self.lower = nn.Parameter(torch.full_like(self.gmin, init_logit))

    def qparams(self, ste: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        wmax = torch.sigmoid(self.upper) * self.gmax
        wmin = torch.sigmoid(self.lower) * self.gmin
        return minmax_qparams(wmin, wmax, self.bits, ste=ste)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta, zp = self.qparams()
        return from_groups(
            fake_quant_groups(to_groups(weight, self.group_size), delta, zp, self.bits), self.in_features
        )

    @torch.no_grad()
    def project_(self) -> None:
        """Nothing to keep in range after a step: the sigmoid bounds the clipping."""

    @torch.no_grad()
    def export(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the calibrate artifact keeps: delta fp32, zero_point uint8 and the clipping logits."""
        delta, zp = self.qparams(ste=False)
        kept = {
            "delta": delta,
            "zero_point": zp.to(torch.uint8),
            "lwc_upper": self.upper,
            "lwc_lower": self.lower,
        }
        return {k: t.detach().cpu().clone() for k, t in kept.items()}
