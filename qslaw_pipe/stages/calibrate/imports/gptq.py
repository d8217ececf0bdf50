"""GPTQ's packing (auto-gptq, GPTQModel, optimum; AutoRound's gptq-style packings), per quantized Linear:

    qweight  int32 [in * bits / 32, out]   each output's codes along the inputs, a dense bit stream
    qzeros   int32 [n_groups, out * bits / 32]   zero points along the outputs, the same stream
    scales   fp16  [n_groups, out]
    g_idx    int32 [in] (optional)          the group of each input

W[o, i] = scales[g, o] * (code[o, i] - zp[g, o]), g = g_idx[i]. The v1 format (auto-gptq's `gptq`) stores
zp - 1 (so a zero point of 0 is stored as 2^bits - 1); v2 (`gptq_v2`) stores zp.
"""

import torch

from qslaw_pipe.kernels.pack import unpack_bits
from qslaw_pipe.stages.calibrate.imports.checkpoint import (
    Imported,
    ImportedLayer,
    check_bits,
    check_groups,
    check_no_permutation,
    grouping,
)

BITS = (2, 3, 4, 8)


def read_layer(tensors: dict, name: str, bits: int, group: int, zero_offset: int) -> ImportedLayer:
    qweight, scales = tensors[f"{name}.qweight"], tensors[f"{name}.scales"]
    g_idx = tensors.get(f"{name}.g_idx")
    out = scales.shape[1]
    in_features = len(g_idx) if g_idx is not None else qweight.shape[0] * 32 // bits
    gs = check_groups(name, in_features, group, scales.shape[0])
    check_no_permutation(name, g_idx, gs)
    codes = unpack_bits(qweight.t().contiguous(), bits, in_features)
    zeros = unpack_bits(tensors[f"{name}.qzeros"], bits, out)
    zp = (zeros + zero_offset) % (2**bits)
    return ImportedLayer(
        codes.to(torch.uint8),
        scales.float().t().contiguous(),
        zp.t().contiguous().to(torch.uint8),
        gs,
    )


def read_packed(tensors: dict, qconfig: dict, fmt: str, zero_offset: int) -> Imported:
    bits = check_bits(int(qconfig["bits"]), BITS, fmt)
    group = grouping(qconfig)
    names = sorted(k.removesuffix(".qweight") for k in tensors if k.endswith(".qweight"))
    return Imported(fmt, bits, {n: read_layer(tensors, n, bits, group, zero_offset) for n in names})


def read(tensors: dict, qconfig: dict) -> Imported:
    v2 = str(qconfig.get("checkpoint_format", "gptq")).lower() == "gptq_v2"
    return read_packed(tensors, qconfig, "gptq", 0 if v2 else 1)
