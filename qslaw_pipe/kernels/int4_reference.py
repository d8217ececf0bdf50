"""Readable reference for the ai.qslaw ops (kernels/csrc): what MatMulInt4, MatMulInt8 and DequantizeInt4 compute."""

import torch

from qslaw_pipe.kernels.pack import unpack_int4
from qslaw_pipe.kernels.quant import dequantize_codes


def dequantize_int4_reference(
    packed: torch.Tensor, delta: torch.Tensor, zp: torch.Tensor, k: int, group_size: int
) -> torch.Tensor:
    """W fp32 [N, K] = delta * (code - zp) per group, codes unpacked low nibble first."""
    return dequantize_codes(unpack_int4(packed, k), delta, zp, group_size)


def matmul_int4_reference(a: torch.Tensor, packed, delta, zp, k: int, group_size: int) -> torch.Tensor:
    """Y [..., N] = A [..., K] @ W^T, accumulated in float64."""
    w = dequantize_int4_reference(packed, delta, zp, k, group_size)
    return (a.double() @ w.double().t()).float()


def matmul_int8_reference(a: torch.Tensor, codes: torch.Tensor, delta, zp, group_size: int) -> torch.Tensor:
    """MatMulInt8: Y [..., N] = A [..., K] @ W^T, W = delta * (code - zp) from uint8 codes [N, K], in float64."""
    w = dequantize_codes(codes, delta, zp, group_size)
    return (a.double() @ w.double().t()).float()
