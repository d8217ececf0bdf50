"""QSLAW fake quantization with learnable group-wise scales (Xie et al., ACM MM 2024, eq. 7-8).

Per weight group one scale `s` (init 1) rescales the weight before quantization; `delta` and `zp`
come from calibration and stay fixed:

    W_hat = W / s
    W_q   = delta * (clamp(round(W_hat / delta) + zp, 0, 2^k - 1) - zp)

Rounding is straight-through, so inside the clamp range dW_q/ds = -delta * (W / delta) / s^2 and
outside it the gradient is 0. Shapes: W [out, in], s / delta / zp [out, n_groups].

`qslaw_reference` is the obvious autograd version. `QslawLinearFunction` is the fast path used in
training: between steps it keeps only the frozen weight, grouped, in its stored dtype (fp32 on the CPU,
the compute dtype, e.g. bf16, on a GPU: 2 bytes per weight), plus delta and zp. Every kernel below
computes `W / delta` in fp32 itself, so a fp32 weight gives bit for bit what fold computes. W_q is
rebuilt in forward and again in backward (no weight-sized tensors saved between them), emitted directly
in the activations' dtype; the weight gradient for the scales is one matmul in that dtype (tensor cores
on a GPU) whose per-group reduction is fused with the recomputation. With `compiled=True` the
elementwise kernels run through torch.compile (fused loops; on the default model about 5-10x faster
than eager, which otherwise dominates the step).
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


def weight_over_delta(w_groups: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """W / delta fp32 [out, n_groups, group_size] from the grouped weight (any float dtype)."""
    return w_groups.float() / delta.float().unsqueeze(-1)


def scaled_codes(
    w_groups: torch.Tensor, s: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes - zp, in-range mask) from the grouped weight [out, n_groups, group_size]."""
    z = zp.unsqueeze(-1)
    pre = torch.round(weight_over_delta(w_groups, delta) / s.unsqueeze(-1)) + z
    inside = (pre >= 0) & (pre <= 2**bits - 1)
    return pre.clamp(0, 2**bits - 1) - z, inside


def dequant_scaled(
    w_groups, s, delta, zp, bits: int, in_features: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """W_q [out, in] in `dtype` (computed in fp32; no autograd)."""
    q, _ = scaled_codes(w_groups, s, delta, zp, bits)
    return from_groups(delta.unsqueeze(-1) * q, in_features).to(dtype).contiguous()


def scale_grad(grad_w, w_groups, s, delta, zp, bits: int) -> torch.Tensor:
    """dL/ds [out, n_groups] fp32 from dL/dW_q [out, in] (any float dtype): sum over unclamped j of
    dL/dW_q * -delta * (W/delta) / s^2."""
    group_size = w_groups.shape[-1]
    pad = -grad_w.shape[1] % group_size
    g = torch.nn.functional.pad(grad_w.float(), (0, pad)).reshape(w_groups.shape)  # zero pad adds nothing
    _, inside = scaled_codes(w_groups, s, delta, zp, bits)
    return torch.where(inside, g * weight_over_delta(w_groups, delta), 0).sum(-1) * (-delta / s**2)


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


def kernel(fn, compiled: bool):
    """`fn` itself, or its torch.compile'd fusion (one loop instead of ~10 elementwise passes)."""
    return _compiled(fn) if compiled else fn


class QslawLinearFunction(torch.autograd.Function):
    """y = x @ W_q(s)^T + b with W_q rebuilt from the grouped weight; gradients for x and s only.
    Matmuls run in x's dtype (bf16 under autocast on a GPU); s, delta, zp and the s gradient stay fp32."""

    @staticmethod
    def forward(ctx, x, s, w_groups, delta, zp, bias, bits, in_features, compiled=False):
        w_q = kernel(dequant_scaled, compiled)(w_groups, s, delta, zp, bits, in_features, x.dtype)
        ctx.save_for_backward(x, s, w_groups, delta, zp)
        ctx.bits, ctx.in_features, ctx.compiled = bits, in_features, compiled
        return torch.nn.functional.linear(x, w_q, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_y):
        x, s, w_groups, delta, zp = ctx.saved_tensors
        grad_x = grad_s = None
        if ctx.needs_input_grad[0]:
            dq = kernel(dequant_scaled, ctx.compiled)
            grad_x = grad_y @ dq(w_groups, s, delta, zp, ctx.bits, ctx.in_features, grad_y.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.reshape(-1, grad_y.shape[-1]).t() @ x.reshape(-1, x.shape[-1]).to(grad_y.dtype)
            grad_s = kernel(scale_grad, ctx.compiled)(grad_w, w_groups, s, delta, zp, ctx.bits)
        return grad_x, grad_s, None, None, None, None, None, None, None
