"""Linears of the built decoder graph as ONNX nodes, from the fold artifact's codes (never re-quantized).

Linears that read the same input (q/k/v, gate/up) are fused into one node with their output rows
stacked, when they are all quantized with one group size (or all unquantized). Ops: those of
int4_ops.INT4_OPS, or fp32 (dequantized weights, plain MatMul: the baseline).
"""

from dataclasses import dataclass

import torch

from qslaw_pipe.exports.onnx.builder import GraphBuilder, uint4_tensor
from qslaw_pipe.exports.onnx.int4_ops import int4_op
from qslaw_pipe.kernels.quant import quantize_codes, rtn_qparams
from qslaw_pipe.pipeline.folded import FoldedLayer, FoldedModel


@dataclass
class LinearWeights:
    """One Linear: fp32 weight [out, in] (dequantized when quantized), bias, and its codes when quantized."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    q: FoldedLayer | None = None


def linear_weights(folded: FoldedModel, state: dict, name: str) -> LinearWeights:
    """The Linear `name` from the fold artifact (`state`: the folded model's fp32 state dict)."""
    q = folded.layers.get(name)
    return LinearWeights(state[f"{name}.weight"], state.get(f"{name}.bias"), q)


def rtn_linear(lw: LinearWeights, bits: int, group_size: int) -> LinearWeights:
    """Round-to-nearest min-max codes for an unquantized Linear (used for lm_head at export)."""
    delta, zp = rtn_qparams(lw.weight, bits, group_size)
    q = FoldedLayer(
        quantize_codes(lw.weight, delta, zp, bits, group_size), delta, zp, group_size, bits, lw.bias
    )
    return LinearWeights(q.dequantized(), lw.bias, q)


def _fusable(parts: list[LinearWeights]) -> bool:
    quantized = {p.q is not None for p in parts}
    kinds = {(p.q.group_size, p.q.bits) if p.q else None for p in parts}
    return len(quantized) == 1 and len(kinds) == 1


def _stack(parts: list[LinearWeights]) -> LinearWeights:
    if len(parts) == 1:
        return parts[0]
    bias = None
    if any(p.bias is not None for p in parts):
        bias = torch.cat([p.bias if p.bias is not None else torch.zeros(p.weight.shape[0]) for p in parts])
    q = None
    if parts[0].q is not None:
        qs = [p.q for p in parts]
        cat = lambda field: torch.cat([getattr(x, field) for x in qs])  # noqa: E731
        q = FoldedLayer(cat("codes"), cat("delta"), cat("zero_point"), qs[0].group_size, qs[0].bits, bias)
    return LinearWeights(torch.cat([p.weight for p in parts]), bias, q)


def _matmul(g: GraphBuilder, x: str, lw: LinearWeights, op: str, level: int, stem: str) -> str:
    n, k = lw.weight.shape
    if lw.q is None or op == "fp32":
        return g.node("MatMul", [x, g.floating(f"{stem}.wT", lw.weight.t().contiguous().numpy())])
    spec, q = int4_op(op, lw.q.bits), lw.q
    names = []
    for i, (name, t) in enumerate(zip(spec.inputs, spec.operands(q), strict=True)):
        if t.is_floating_point():  # scales, in the graph's float type (the activations' type)
            names.append(g.floating(f"{stem}.{name}", t.numpy()))
            continue
        value = uint4_tensor(f"{stem}.{name}", t) if i in spec.uint4 and q.bits <= 4 else t.numpy()
        names.append(g.initializer(f"{stem}.{name}", value))
    return spec.emit(g.node, x, names, k, n, q.group_size, q.bits, level)


def linear(g: GraphBuilder, x: str, parts: list[LinearWeights], op: str, level: int, stem: str) -> str:
    """y = x @ [W_1; W_2; ...]^T + b: one node when the parts fuse, else one per part and a Concat."""
    if not _fusable(parts):
        ys = [linear(g, x, [p], op, level, f"{stem}.{i}") for i, p in enumerate(parts)]
        return g.node("Concat", ys, axis=-1)
    lw = _stack(parts)
    y = _matmul(g, x, lw, op, level, stem)
    if lw.bias is not None:
        y = g.node("Add", [y, g.floating(f"{stem}.bias", lw.bias.numpy())])
    return y
