"""AWQ's GEMM packing (AutoAWQ, llm-awq; AutoRound's auto_round:auto_awq), 4 bits, per quantized Linear:

    qweight  int32 [in, out / 8]        8 outputs per word, in AWQ's order (slot s holds output ORDER[s])
    qzeros   int32 [n_groups, out / 8]  the same packing
    scales   fp16  [n_groups, out]

W[o, i] = scales[g, o] * (code[o, i] - zp[g, o]), g = i // group_size.
"""

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.pack import unpack_bits
from qslaw_pipe.stages.calibrate.imports.checkpoint import (
    Imported,
    ImportedLayer,
    check_bits,
    check_groups,
    grouping,
)

ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def unpack_outputs(packed: torch.Tensor, out: int) -> torch.Tensor:
    """int32 [rows, out / 8] -> int64 [rows, out] in output order."""
    slots = unpack_bits(packed, 4, out)
    where = torch.empty(8, dtype=torch.long)
    where[list(ORDER)] = torch.arange(8)  # output k sits in slot where[k]
    index = (torch.arange(out) // 8) * 8 + where[torch.arange(out) % 8]
    return slots[:, index]


def read_layer(tensors: dict, name: str, group: int) -> ImportedLayer:
    qweight, scales = tensors[f"{name}.qweight"], tensors[f"{name}.scales"]
    in_features, out = qweight.shape[0], scales.shape[1]
    gs = check_groups(name, in_features, group, scales.shape[0])
    codes = unpack_outputs(qweight, out).t().contiguous()
    zp = unpack_outputs(tensors[f"{name}.qzeros"], out).t().contiguous()
    return ImportedLayer(codes.to(torch.uint8), scales.float().t().contiguous(), zp.to(torch.uint8), gs)


def read_packed(tensors: dict, qconfig: dict, fmt: str) -> Imported:
    bits = check_bits(int(qconfig.get("bits", qconfig.get("w_bit", 4))), (4,), fmt)
    group = grouping(qconfig, "group_size" if "group_size" in qconfig else "q_group_size")
    names = sorted(k.removesuffix(".qweight") for k in tensors if k.endswith(".qweight"))
    return Imported(fmt, bits, {n: read_layer(tensors, n, group) for n in names})


def read(tensors: dict, qconfig: dict) -> Imported:
    version = str(qconfig.get("version", "gemm")).lower()
    if version != "gemm" or qconfig.get("zero_point", True) is False:
        raise QslawError(
            f"AWQ {version} packing{' without zero points' if version == 'gemm' else ''} is not one we import",
            "import an AWQ checkpoint in GEMM packing with zero points (AutoAWQ's default)",
        )
    return read_packed(tensors, qconfig, "awq")
