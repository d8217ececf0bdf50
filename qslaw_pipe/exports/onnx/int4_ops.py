"""The int-k ops a folded Linear exports as: one table (`INT4_OPS`) that the traced graphs (Int4Linear),
the built decoder (linear.py), the export checks and the runtime all use. Operands come from the fold
artifact's codes (never re-quantized):

  matmulnbits  com.microsoft MatMulNBits: B uint8 [N, k_blocks, block_size / 2] (low nibble first,
               K padded with code 0 to whole blocks), scales [N * k_blocks], zero points packed two
               per byte [N * ceil(k_blocks / 2)]; 8-bit codes: B [N, k_blocks, block], zero points [N * k_blocks]
  qdq          opset-21 DequantizeLinear on a UINT4 [K, N] weight with block_size along K, then MatMul
               (traced graphs hold the UINT4 operands as uint8 and are retyped after export: retype.py)
  custom       ai.qslaw MatMulInt4 (kernels/ custom-op library): packed [N, ceil(K / 2)], delta and
               zero point [N, n_groups], attributes K, N, group_size, any group size; 8-bit layers (an int8
               lm_head) as ai.qslaw MatMulInt8 with codes uint8 [N, K]
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.pack import pack_int4
from qslaw_pipe.pipeline.folded import FoldedLayer

CUSTOM_DOMAIN = "ai.qslaw"
MS_DOMAIN = "com.microsoft"


def pad_blocks(codes: torch.Tensor, block: int) -> torch.Tensor:
    """Pad K with code 0 to whole blocks."""
    pad = -codes.shape[1] % block
    return torch.nn.functional.pad(codes, (0, pad)) if pad else codes


def matmulnbits_inputs(codes: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, block: int):
    """(B [N, k_blocks, block/2] uint8, scales [N*k_blocks] fp32, zero points [N*ceil(k_blocks/2)] uint8)."""
    n = codes.shape[0]
    b = pack_int4(pad_blocks(codes, block)).reshape(n, -1, block // 2)
    zp_rows = zp if zp.shape[1] % 2 == 0 else torch.nn.functional.pad(zp, (0, 1))
    return b.contiguous(), delta.reshape(-1).contiguous(), pack_int4(zp_rows).reshape(-1).contiguous()


def _matmulnbits_operands(q: FoldedLayer) -> list[torch.Tensor]:
    if q.bits <= 4:
        return list(matmulnbits_inputs(q.codes, q.delta, q.zero_point, q.group_size))
    b = pad_blocks(q.codes, q.group_size).reshape(q.shape[0], -1, q.group_size)
    return [b.contiguous(), q.delta.reshape(-1).contiguous(), q.zero_point.reshape(-1).contiguous()]


def _qdq_operands(q: FoldedLayer) -> list[torch.Tensor]:
    return [q.codes.t().contiguous(), q.delta.t().contiguous(), q.zero_point.t().contiguous()]


def _custom_operands(q: FoldedLayer) -> list[torch.Tensor]:
    codes = pack_int4(q.codes) if q.bits <= 4 else q.codes.to(torch.uint8).contiguous()
    return [codes, q.delta.contiguous(), q.zero_point.contiguous()]


# emit(node, x, operand names, K, N, group, bits, accuracy level) -> output; `node(op, inputs, domain=, **attrs)`
# is GraphBuilder.node for the built decoder and a torch.onnx GraphContext adapter for traced graphs


def _emit_matmulnbits(node, x, w, k, n, group, bits, level):
    return node(
        "MatMulNBits", [x, *w], domain=MS_DOMAIN, K=k, N=n, bits=bits, block_size=group, accuracy_level=level
    )


def _emit_qdq(node, x, w, k, n, group, bits, level):
    return node("MatMul", [x, node("DequantizeLinear", w, axis=0, block_size=group)])


def _emit_custom(node, x, w, k, n, group, bits, level):
    op = "MatMulInt4" if bits <= 4 else "MatMulInt8"
    return node(op, [x, *w], domain=CUSTOM_DOMAIN, K=k, N=n, group_size=group)


@dataclass(frozen=True)
class Int4Op:
    """name; operand names and builders; the node emitter; which operands are UINT4 (for bits <= 4)."""

    name: str
    inputs: tuple[str, ...]
    operands: Callable[[FoldedLayer], list[torch.Tensor]]
    emit: Callable
    uint4: tuple[int, ...] = ()

    def refusal(self, layer: str, group_size: int, bits: int) -> QslawError | None:
        """Why this op cannot hold `layer` (None when it can)."""
        if bits > 4:
            return QslawError(f"int4 export of {bits}-bit codes", "calibrate with --bits 2, 3 or 4")
        if self.name == "matmulnbits" and (group_size < 16 or group_size & (group_size - 1)):
            return QslawError(
                f"MatMulNBits needs a power-of-two group size >= 16, {layer} has {group_size}",
                "calibrate with --group-size 32, 64 or 128, or export with --int4-op qdq",
            )
        return None


INT4_OPS = {
    "matmulnbits": Int4Op("matmulnbits", ("q", "scales", "zp"), _matmulnbits_operands, _emit_matmulnbits),
    "qdq": Int4Op("qdq", ("q", "scale", "zp"), _qdq_operands, _emit_qdq, uint4=(0, 2)),
    "custom": Int4Op("custom", ("q", "delta", "zp"), _custom_operands, _emit_custom),
}
OPS = tuple(INT4_OPS)


def int4_op(name: str, bits: int) -> Int4Op:
    """The op for `name` at `bits` (the table's ops emit 8-bit layers in their own 8-bit form)."""
    return INT4_OPS[name]


def check_int4(layers: dict[str, FoldedLayer], op: str) -> None:
    """Refuse, before any work, fold artifacts the chosen int4 op cannot represent (fp32 takes anything)."""
    if op == "fp32":
        return
    for name, q in layers.items():
        refusal = INT4_OPS[op].refusal(name, q.group_size, q.bits)
        if refusal:
            raise refusal


def _torch_node(g, x):
    """`node(op, inputs, domain, **attrs)` over a torch.onnx GraphContext; contrib-domain outputs get x's
    type with last dimension N (the exporter cannot infer it)."""

    def node(op, inputs, domain="", **attrs):
        typed = {f"{k}_{'f' if isinstance(v, float) else 'i'}": v for k, v in attrs.items()}
        y = g.op(f"{domain}::{op}" if domain else op, *inputs, **typed)
        sizes = x.type().varyingSizes() if domain else None
        if sizes is not None:
            y.setType(x.type().with_sizes([*sizes[:-1], attrs["N"]]))
        return y

    return node


class _Int4MatMul(torch.autograd.Function):
    """x @ weight^T in PyTorch (tracing sees the right values and shapes); the op's nodes in ONNX."""

    @staticmethod
    def forward(ctx, x, weight, op, k, n, group, bits, level, *operands):
        return x @ weight.t()

    @staticmethod
    def symbolic(g, x, weight, op, k, n, group, bits, level, *operands):
        return INT4_OPS[op].emit(_torch_node(g, x), x, list(operands), k, n, group, bits, level)


class Int4Linear(nn.Module):
    """A folded Linear for torch.onnx.export as `op` (exports as that op's nodes on its operands)."""

    def __init__(self, layer: FoldedLayer, op: str, accuracy_level: int = 0):
        super().__init__()
        self.spec = int4_op(op, layer.bits)
        self.layer_info = (*layer.shape[::-1], layer.group_size, layer.bits, accuracy_level)
        self.register_buffer("weight", layer.dequantized())
        self.register_buffer("bias", layer.bias)
        self.operand_names = [f"op_{n}" for n in self.spec.inputs]
        for name, t in zip(self.operand_names, self.spec.operands(layer), strict=True):
            self.register_buffer(name, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        operands = [getattr(self, n) for n in self.operand_names]
        y = _Int4MatMul.apply(x, self.weight, self.spec.name, *self.layer_info, *operands)
        return y if self.bias is None else y + self.bias
