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
With `compiled=True` the two elementwise kernels run through torch.compile (fused loops; on the
default model about 5-10x faster than eager, which otherwise dominates the step).
"""

import functools

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


def weight_over_delta(w: torch.Tensor, delta: torch.Tensor, group_size: int) -> torch.Tensor:
    """The cache every QSLAW path starts from: W / delta fp32 [out, n_groups, group_size]."""
    return to_groups(w.detach().float(), group_size) / delta.float().unsqueeze(-1)


def scaled_codes(
    w_over_delta: torch.Tensor, s: torch.Tensor, zp: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes - zp, in-range mask) from the cached W / delta [out, n_groups, group_size]."""
    z = zp.unsqueeze(-1)
    pre = torch.round(w_over_delta / s.unsqueeze(-1)) + z
    inside = (pre >= 0) & (pre <= 2**bits - 1)
    return pre.clamp(0, 2**bits - 1) - z, inside


def dequant_scaled(w_over_delta, s, delta, zp, bits: int, in_features: int) -> torch.Tensor:
    """W_q [out, in] fp32 from the cache (no autograd)."""
    q, _ = scaled_codes(w_over_delta, s, zp, bits)
    return from_groups(delta.unsqueeze(-1) * q, in_features).contiguous()


def scale_grad(grad_w, w_over_delta, s, delta, zp, bits: int) -> torch.Tensor:
    """dL/ds [out, n_groups] from dL/dW_q [out, in]: sum over unclamped j of dL/dW_q * -delta * (W/delta) / s^2."""
    group_size = w_over_delta.shape[-1]
    pad = -grad_w.shape[1] % group_size
    g = torch.nn.functional.pad(grad_w, (0, pad)).reshape(w_over_delta.shape)  # zero pad adds nothing
    _, inside = scaled_codes(w_over_delta, s, zp, bits)
    return torch.where(inside, g * w_over_delta, 0).sum(-1) * (-delta / s**2)


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


def kernel(fn, compiled: bool):
    """`fn` itself, or its torch.compile'd fusion (one loop instead of ~10 elementwise passes)."""
    return _compiled(fn) if compiled else fn


class QslawLinearFunction(torch.autograd.Function):
    """y = x @ W_q(s)^T + b with W_q rebuilt from the cache; gradients for x and s only."""

    @staticmethod
    def forward(ctx, x, s, w_over_delta, delta, zp, bias, bits, in_features, compiled=False):
        w_q = kernel(dequant_scaled, compiled)(w_over_delta, s, delta, zp, bits, in_features)
        ctx.save_for_backward(x, s, w_over_delta, delta, zp)
        ctx.bits, ctx.in_features, ctx.compiled = bits, in_features, compiled
        return torch.nn.functional.linear(x, w_q.to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, s, w_over_delta, delta, zp = ctx.saved_tensors
        grad_x = grad_s = None
        if ctx.needs_input_grad[0]:
            w_q = kernel(dequant_scaled, ctx.compiled)(w_over_delta, s, delta, zp, ctx.bits, ctx.in_features)
            grad_x = grad_y @ w_q.to(grad_y.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.reshape(-1, grad_y.shape[-1]).t().float() @ x.reshape(-1, x.shape[-1]).float()
            grad_s = kernel(scale_grad, ctx.compiled)(grad_w, w_over_delta, s, delta, zp, ctx.bits)
        return grad_x, grad_s, None, None, None, None, None, None, None
