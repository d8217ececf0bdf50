"""QSLAW fake quantization with learnable group-wise scales (Xie et al., ACM MM 2024, eq. 7-8).

Per weight group one scale `s` (init 1) rescales the weight before quantization; `delta` and `zp`
come from calibration and stay fixed:

    W_hat = W / s
    W_q   = delta * (clamp(round(W_hat / delta) + zp, 0, 2^k - 1) - zp)

Rounding is straight-through, so inside the clamp range dW_q/ds = -delta * (W / delta) / s^2 and
outside it the gradient is 0. Shapes: W [out, in], s / delta / zp [out, n_groups].

`qslaw_reference` is the obvious autograd version. `QslawLinearFunction` is the fast path used in
training: it keeps only `W / delta` (grouped, fp32) between steps, recomputes W_q in backward instead
of saving weight-sized intermediates, and returns the gradient of `s` from the same recomputation.
"""

import torch

from qslaw_pipe.kernels.quant import from_groups, round_ste, to_groups


def qslaw_reference(
    w: torch.Tensor, s: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, bits: int, group_size: int
) -> torch.Tensor:
    """W_q [out, in] fp32 from W and scales, differentiable in `s` (and W) through STE rounding."""
    g = to_groups(w.float(), group_size) / s.unsqueeze(-1)
    d, z = delta.unsqueeze(-1), zp.unsqueeze(-1).float()
    codes = torch.clamp(round_ste(g / d) + z, 0, 2**bits - 1)
    return from_groups(d * (codes - z), w.shape[1])


def scaled_codes(
    w_over_delta: torch.Tensor, s: torch.Tensor, zp: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes - zp, in-range mask) from the cached W / delta [out, n_groups, group_size]."""
    z = zp.unsqueeze(-1).float()
    pre = torch.round(w_over_delta / s.unsqueeze(-1)) + z
    inside = (pre >= 0) & (pre <= 2**bits - 1)
    return pre.clamp(0, 2**bits - 1) - z, inside


def pad_columns(grad: torch.Tensor, group_size: int) -> torch.Tensor:
    """Zero-pad [out, in] to whole groups: padded columns must add nothing to a group's gradient."""
    pad = -grad.shape[1] % group_size
    return torch.nn.functional.pad(grad, (0, pad)) if pad else grad


class QslawLinearFunction(torch.autograd.Function):
    """y = x @ W_q(s)^T + b with W_q rebuilt from the cache; gradients for x and s only."""

    @staticmethod
    def forward(ctx, x, s, w_over_delta, delta, zp, bias, bits, in_features):
        q, _ = scaled_codes(w_over_delta, s, zp, bits)
        w_q = from_groups(delta.unsqueeze(-1) * q, in_features)
        ctx.save_for_backward(x, s, w_over_delta, delta, zp)
        ctx.bits, ctx.in_features = bits, in_features
        return torch.nn.functional.linear(x, w_q.to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, s, w_over_delta, delta, zp = ctx.saved_tensors
        q, inside = scaled_codes(w_over_delta, s, zp, ctx.bits)
        w_q = from_groups(delta.unsqueeze(-1) * q, ctx.in_features)
        grad_x = grad_y @ w_q.to(grad_y.dtype) if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.reshape(-1, grad_y.shape[-1]).t().float() @ x.reshape(-1, x.shape[-1]).float()
            g = to_groups(pad_columns(grad_w, w_over_delta.shape[-1]), w_over_delta.shape[-1])
            # d W_q / d s = -delta * (W / delta) / s^2 where the code is not clamped
            dw_ds = -delta.unsqueeze(-1) * w_over_delta / s.unsqueeze(-1) ** 2
            grad_s = (g * dw_ds * inside).sum(-1)
        return grad_x, grad_s, None, None, None, None, None, None
