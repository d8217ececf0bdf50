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


def _codes(
    wd: torch.Tensor, s: torch.Tensor, zp: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes - zp, in-range mask) from W / delta [out, n_groups, group_size]."""
    z = zp.unsqueeze(-1)
    pre = torch.round(wd / s.unsqueeze(-1)) + z
    inside = (pre >= 0) & (pre <= 2**bits - 1)
    return pre.clamp(0, 2**bits - 1) - z, inside


def scaled_codes(
    w_groups: torch.Tensor, s: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes - zp, in-range mask) from the grouped weight [out, n_groups, group_size]."""
    return _codes(weight_over_delta(w_groups, delta), s, zp, bits)


def dequant_scaled(
    w_groups, s, delta, zp, bits: int, in_features: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """W_q [out, in] in `dtype` (computed in fp32; no autograd)."""
    q, _ = scaled_codes(w_groups, s, delta, zp, bits)
    return from_groups(delta.unsqueeze(-1) * q, in_features).to(dtype).contiguous()


def _grouped(grad_w: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """dL/dW_q [out, in] as fp32 groups [out, n_groups, group_size] (the zero pad adds nothing)."""
    pad = -grad_w.shape[1] % shape[-1]
    return torch.nn.functional.pad(grad_w.float(), (0, pad)).reshape(shape)


def scale_grad(grad_w, w_groups, s, delta, zp, bits: int) -> torch.Tensor:
    """dL/ds [out, n_groups] fp32 from dL/dW_q [out, in] (any float dtype): sum over unclamped j of
    dL/dW_q * -delta * (W/delta) / s^2."""
    _, inside = scaled_codes(w_groups, s, delta, zp, bits)
    g = _grouped(grad_w, w_groups.shape)
    return torch.where(inside, g * weight_over_delta(w_groups, delta), 0).sum(-1) * (-delta / s**2)


def dequant_with_coef(
    w_groups, s, delta, zp, bits: int, in_features: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_q [out, in] in `dtype`, coef [out, n_groups, group_size] fp32): one pass that also leaves what
    the scale gradient needs, coef = W/delta where unclamped, else 0 (scale_grad_from_coef)."""
    wd = weight_over_delta(w_groups, delta)
    q, inside = _codes(wd, s, zp, bits)
    w_q = from_groups(delta.unsqueeze(-1) * q, in_features).to(dtype).contiguous()
    return w_q, torch.where(inside, wd, 0)


def scale_grad_from_coef(grad_w, coef, s, delta) -> torch.Tensor:
    """scale_grad with the coefficients kept from forward (dequant_with_coef)."""
    return torch.where(coef != 0, _grouped(grad_w, coef.shape) * coef, 0).sum(-1) * (-delta / s**2)


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=True)


def kernel(fn, compiled: bool):
    """`fn` itself, or its torch.compile'd fusion (one loop instead of ~10 elementwise passes)."""
    return _compiled(fn) if compiled else fn


class QslawLinearFunction(torch.autograd.Function):
    """y = x @ W_q(s)^T + b with W_q rebuilt from the grouped weight; gradients for x and s only.
    Matmuls run in x's dtype (bf16 under autocast on a GPU); s, delta, zp and the s gradient stay fp32.

    keep=False (lean) rebuilds W_q in backward and recomputes the clamp mask for the scale gradient;
    keep=True saves W_q and the scale-gradient coefficients from forward (two weight-sized tensors per
    layer held until backward) and skips both recomputations: the same values, less work."""

    @staticmethod
    def forward(ctx, x, s, w_groups, delta, zp, bias, bits, in_features, compiled=False, keep=False):
        ctx.bits, ctx.in_features, ctx.compiled, ctx.keep = bits, in_features, compiled, keep
        if keep and ctx.needs_input_grad[1]:
            w_q, coef = kernel(dequant_with_coef, compiled)(
                w_groups, s, delta, zp, bits, in_features, x.dtype
            )
            ctx.save_for_backward(x, s, delta, w_q, coef)
        elif keep:
            w_q = kernel(dequant_scaled, compiled)(w_groups, s, delta, zp, bits, in_features, x.dtype)
            ctx.save_for_backward(x, s, delta, w_q, None)
        else:
            w_q = kernel(dequant_scaled, compiled)(w_groups, s, delta, zp, bits, in_features, x.dtype)
            ctx.save_for_backward(x, s, w_groups, delta, zp)
        return torch.nn.functional.linear(x, w_q, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_y):
        grad_x = grad_s = grad_w = None
        if ctx.keep:
            x, s, delta, w_q, coef = ctx.saved_tensors
        else:
            x, s, w_groups, delta, zp = ctx.saved_tensors
        if ctx.needs_input_grad[0]:
            if not ctx.keep:
                dq = kernel(dequant_scaled, ctx.compiled)
                w_q = dq(w_groups, s, delta, zp, ctx.bits, ctx.in_features, grad_y.dtype)
            grad_x = grad_y @ w_q.to(grad_y.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = grad_y.reshape(-1, grad_y.shape[-1]).t() @ x.reshape(-1, x.shape[-1]).to(grad_y.dtype)
            if ctx.keep:
                grad_s = kernel(scale_grad_from_coef, ctx.compiled)(grad_w, coef, s, delta)
            else:
                grad_s = kernel(scale_grad, ctx.compiled)(grad_w, w_groups, s, delta, zp, ctx.bits)
        return grad_x, grad_s, None, None, None, None, None, None, None, None
