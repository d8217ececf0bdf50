"""Quantized Linears that export as ONNX int4 ops built from the fold artifact's codes (never re-quantized).

Each module computes the dequantized matmul in PyTorch (so tracing sees the right values and shapes)
and carries a `symbolic` that the ONNX exporter emits instead:

  matmulnbits  com.microsoft MatMulNBits: B uint8 [N, k_blocks, block_size / 2] (low nibble first,
               K padded with code 0 to whole blocks), scales [N * k_blocks], zero points packed two
               per byte [N * ceil(k_blocks / 2)]
  qdq          opset-21 DequantizeLinear on a UINT4 [K, N] weight with block_size along K, then MatMul
               (the UINT4 initializers are written as uint8 and retyped after export: exports/retype.py)
  custom       ai.qslaw MatMulInt4 (kernels/ custom-op library): packed [N, ceil(K / 2)], delta and
               zero point [N, n_groups], attributes K, N, group_size
"""

import torch
from torch import nn

from qslaw_pipe.kernels.pack import pack_int4
from qslaw_pipe.kernels.quant import dequantize_codes

OPS = ("matmulnbits", "qdq", "custom")
CUSTOM_DOMAIN = "ai.qslaw"


def _pad_blocks(codes: torch.Tensor, block: int) -> torch.Tensor:
    pad = -codes.shape[1] % block
    return torch.nn.functional.pad(codes, (0, pad)) if pad else codes


def matmulnbits_inputs(codes: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, block: int):
    """(B [N, k_blocks, block/2] uint8, scales [N*k_blocks] fp32, zero points [N*ceil(k_blocks/2)] uint8)."""
    n = codes.shape[0]
    b = pack_int4(_pad_blocks(codes, block)).reshape(n, -1, block // 2)
    zp_rows = zp if zp.shape[1] % 2 == 0 else torch.nn.functional.pad(zp, (0, 1))
    return b.contiguous(), delta.reshape(-1).contiguous(), pack_int4(zp_rows).reshape(-1).contiguous()


def _typed(x, n: int, y):
    """Give a custom op's output x's type with the last dimension n (the exporter cannot infer it)."""
    sizes = x.type().varyingSizes()
    if sizes is not None:
        y.setType(x.type().with_sizes([*sizes[:-1], n]))
    return y


class _MatMulNBits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, scales, zps, weight, k, n, block, level):
        return x @ weight.t()

    @staticmethod
    def symbolic(g, x, b, scales, zps, weight, k, n, block, level):
        return _typed(
            x,
            n,
            g.op(
                "com.microsoft::MatMulNBits",
                x,
                b,
                scales,
                zps,
                K_i=k,
                N_i=n,
                bits_i=4,
                block_size_i=block,
                accuracy_level_i=level,
            ),
        )


class _Qdq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, q, scale, zp, weight, block):
        return x @ weight.t()

    @staticmethod
    def symbolic(g, x, q, scale, zp, weight, block):
        w = g.op("DequantizeLinear", q, scale, zp, axis_i=0, block_size_i=block)
        return g.op("MatMul", x, w)


class _Custom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, packed, delta, zp, weight, k, n, group):
        return x @ weight.t()

    @staticmethod
    def symbolic(g, x, packed, delta, zp, weight, k, n, group):
        return _typed(
            x, n, g.op(f"{CUSTOM_DOMAIN}::MatMulInt4", x, packed, delta, zp, K_i=k, N_i=n, group_size_i=group)
        )


class Int4Linear(nn.Module):
    """A folded Linear (codes uint8 [out, in], delta fp32 and zp uint8 [out, n_groups]) for export as `op`."""

    def __init__(
        self, codes, delta, zp, group_size: int, bias: torch.Tensor | None, op: str, accuracy_level: int = 0
    ):
        super().__init__()
        if op not in OPS:
            raise ValueError(f"unknown int4 op {op}")
        self.op, self.group_size, self.accuracy_level = op, group_size, accuracy_level
        self.out_features, self.in_features = codes.shape
        self.register_buffer("weight", dequantize_codes(codes, delta, zp, group_size))
        self.register_buffer("bias", bias)
        if op == "matmulnbits":
            b, s, z = matmulnbits_inputs(codes, delta, zp, group_size)
        elif op == "qdq":  # [K, N] along K in blocks; uint8 here, UINT4 after retyping
            b = codes.t().contiguous()
            s, z = delta.t().contiguous(), zp.t().contiguous()
        else:
            b, s, z = pack_int4(codes), delta.contiguous(), zp.contiguous()
        self.register_buffer("q", b)
        self.register_buffer("scales", s)
        self.register_buffer("zps", z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "matmulnbits":
            y = _MatMulNBits.apply(
                x,
                self.q,
                self.scales,
                self.zps,
                self.weight,
                self.in_features,
                self.out_features,
                self.group_size,
                self.accuracy_level,
            )
        elif self.op == "qdq":
            y = _Qdq.apply(x, self.q, self.scales, self.zps, self.weight, self.group_size)
        else:
            y = _Custom.apply(
                x,
                self.q,
                self.scales,
                self.zps,
                self.weight,
                self.in_features,
                self.out_features,
                self.group_size,
            )
        return y if self.bias is None else y + self.bias
