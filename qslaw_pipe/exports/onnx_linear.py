"""Linears of the built decoder graph as ONNX nodes, from the fold artifact's codes (never re-quantized).

Linears that read the same input (q/k/v, gate/up) are fused into one node with their output rows
stacked, when they are all quantized with one group size (or all unquantized). Ops, as in int4_ops:
matmulnbits (com.microsoft MatMulNBits), qdq (UINT4 DequantizeLinear + MatMul), custom (ai.qslaw
MatMulInt4), fp32 (dequantized weights, plain MatMul: the baseline).
"""

from dataclasses import dataclass

import numpy as np
import torch

from qslaw_pipe.exports.int4_ops import CUSTOM_DOMAIN, matmulnbits_inputs
from qslaw_pipe.exports.onnx_builder import GraphBuilder, uint4_tensor
from qslaw_pipe.kernels.pack import pack_int4
from qslaw_pipe.kernels.quant import dequantize_codes, quantize_codes, rtn_qparams
from qslaw_pipe.pipeline.folded import layer_codes


@dataclass
class LinearWeights:
    """One Linear: fp32 weight [out, in] (dequantized when quantized), and codes / delta / zp when quantized."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    zp: torch.Tensor | None = None
    group_size: int = 0
    bits: int = 4


def linear_weights(tensors: dict, header: dict, state: dict, name: str) -> LinearWeights:
    """The Linear `name` from the fold artifact (`state`: the folded model's fp32 state dict)."""
    weight, bias = state[f"{name}.weight"], state.get(f"{name}.bias")
    if name not in header["shapes"]:
        return LinearWeights(weight, bias)
    return LinearWeights(
        weight,
        bias,
        layer_codes(tensors, header, name),
        tensors[f"{name}.delta"],
        tensors[f"{name}.zero_point"],
        header["group_sizes"][name],
    )


def rtn_linear(lw: LinearWeights, bits: int, group_size: int) -> LinearWeights:
    """Round-to-nearest min-max codes for an unquantized Linear (used for lm_head at export)."""
    delta, zp = rtn_qparams(lw.weight, bits, group_size)
    codes = quantize_codes(lw.weight, delta, zp, bits, group_size)
    return LinearWeights(
        dequantize_codes(codes, delta, zp, group_size), lw.bias, codes, delta, zp, group_size, bits
    )


def _matmulnbits8(codes: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, block: int):
    """MatMulNBits bits=8 operands: B [N, k_blocks, block] uint8, scales [N*k_blocks], zero points [N*k_blocks]."""
    n = codes.shape[0]
    pad = -codes.shape[1] % block
    b = torch.nn.functional.pad(codes, (0, pad)) if pad else codes
    return b.reshape(n, -1, block).contiguous(), delta.reshape(-1).contiguous(), zp.reshape(-1).contiguous()


def _fusable(parts: list[LinearWeights]) -> bool:
    quantized = {p.codes is not None for p in parts}
    return len(quantized) == 1 and len({(p.group_size, p.bits) for p in parts}) == 1


def _stack(parts: list[LinearWeights]) -> LinearWeights:
    if len(parts) == 1:
        return parts[0]
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    bias = None
    if any(p.bias is not None for p in parts):
        bias = torch.cat([p.bias if p.bias is not None else torch.zeros(p.weight.shape[0]) for p in parts])
    return LinearWeights(
        torch.cat([p.weight for p in parts]),
        bias,
        cat([p.codes for p in parts]),
        cat([p.delta for p in parts]),
        cat([p.zp for p in parts]),
        parts[0].group_size,
        parts[0].bits,
    )


def _matmul(g: GraphBuilder, x: str, lw: LinearWeights, op: str, level: int, stem: str) -> str:
    n, k = lw.weight.shape
    if lw.codes is None or op == "fp32":
        return g.node("MatMul", [x, g.initializer(f"{stem}.wT", lw.weight.t().contiguous().numpy())])
    if lw.bits == 8 and op == "custom":  # the ai.qslaw op is 4-bit only: 8-bit Linears use MatMulNBits
        op = "matmulnbits"
    if op == "matmulnbits":
        pack = _matmulnbits8 if lw.bits == 8 else matmulnbits_inputs
        b, s, z = pack(lw.codes, lw.delta, lw.zp, lw.group_size)
        names = [g.initializer(f"{stem}.{p}", t.numpy()) for p, t in (("q", b), ("scales", s), ("zp", z))]
        return g.node(
            "MatMulNBits",
            [x, *names],
            domain="com.microsoft",
            K=k,
            N=n,
            bits=lw.bits,
            block_size=lw.group_size,
            accuracy_level=level,
        )
    if op == "qdq":
        typed = (lambda n, t: t.contiguous().numpy()) if lw.bits == 8 else uint4_tensor  # noqa: E731
        q = g.initializer(f"{stem}.q", typed(f"{stem}.q", lw.codes.t()))
        s = g.initializer(f"{stem}.scale", lw.delta.t().contiguous().numpy())
        z = g.initializer(f"{stem}.zp", typed(f"{stem}.zp", lw.zp.t()))
        w = g.node("DequantizeLinear", [q, s, z], axis=0, block_size=lw.group_size)
        return g.node("MatMul", [x, w])
    packed = g.initializer(f"{stem}.q", pack_int4(lw.codes).numpy())
    delta = g.initializer(f"{stem}.delta", lw.delta.contiguous().numpy())
    zp = g.initializer(f"{stem}.zp", lw.zp.contiguous().numpy())
    return g.node(
        "MatMulInt4", [x, packed, delta, zp], domain=CUSTOM_DOMAIN, K=k, N=n, group_size=lw.group_size
    )


def linear(g: GraphBuilder, x: str, parts: list[LinearWeights], op: str, level: int, stem: str) -> str:
    """y = x @ [W_1; W_2; ...]^T + b: one node when the parts fuse, else one per part and a Concat."""
    if not _fusable(parts):
        ys = [linear(g, x, [p], op, level, f"{stem}.{i}") for i, p in enumerate(parts)]
        return g.node("Concat", ys, axis=-1)
    lw = _stack(parts)
    y = _matmul(g, x, lw, op, level, stem)
    if lw.bias is not None:
        y = g.node("Add", [y, g.initializer(f"{stem}.bias", lw.bias.numpy().astype(np.float32))])
    return y
