"""compressed-tensors `pack-quantized` int weights (llm-compressor's checkpoints; our own export), per Linear:

    weight_packed       int32 [out, in * bits / 32]     code - 2^(bits-1), a dense bit stream along the inputs
    weight_scale        [out, n_groups]
    weight_zero_point   int32 [out * bits / 32, n_groups]   zp - 2^(bits-1), packed along the outputs (absent
                        when symmetric: zp = 2^(bits-1) in our terms)
    weight_shape        [out, in]; weight_g_idx [in] with act order

W = scale * (q - zp_q), q = code - 2^(bits-1). Every config group must share one int scheme (bits, strategy
group or channel, group size).
"""

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.pack import unpack_bits
from qslaw_pipe.stages.calibrate.imports.checkpoint import (
    Imported,
    ImportedLayer,
    check_bits,
    check_groups,
    check_no_permutation,
)


def weight_scheme(qconfig: dict) -> dict:
    fmt = str(qconfig.get("format", ""))
    schemes = {
        tuple(sorted((k, str(v)) for k, v in (g.get("weights") or {}).items()))
        for g in (qconfig.get("config_groups") or {}).values()
    }
    if fmt != "pack-quantized" or len(schemes) != 1:
        raise QslawError(
            f"compressed-tensors {fmt or '(no format)'} with {len(schemes)} weight schemes is not one we import",
            "import a pack-quantized checkpoint with one int weight scheme (W4A16-style)",
        )
    weights = next(iter(qconfig["config_groups"].values()))["weights"]
    if weights.get("type", "int") != "int" or weights.get("strategy") not in ("group", "channel"):
        raise QslawError(
            f"compressed-tensors {weights.get('type')} weights by {weights.get('strategy')} are not ones we import",
            "import int weights quantized by group or by channel",
        )
    return weights


def read_layer(tensors: dict, name: str, bits: int, group: int, symmetric: bool) -> ImportedLayer:
    out, in_features = (int(v) for v in tensors[f"{name}.weight_shape"].tolist())
    scale = tensors[f"{name}.weight_scale"]
    gs = check_groups(name, in_features, group, scale.shape[1])
    check_no_permutation(name, tensors.get(f"{name}.weight_g_idx"), gs)
    codes = unpack_bits(tensors[f"{name}.weight_packed"], bits, in_features)
    if symmetric:
        zp = torch.full(scale.shape, 2 ** (bits - 1), dtype=torch.int64)
    else:
        zp = unpack_bits(tensors[f"{name}.weight_zero_point"].t().contiguous(), bits, out).t()
    return ImportedLayer(
        codes.to(torch.uint8), scale.float().contiguous(), zp.contiguous().to(torch.uint8), gs
    )


def read(tensors: dict, qconfig: dict) -> Imported:
    weights = weight_scheme(qconfig)
    bits = check_bits(int(weights["num_bits"]), (2, 3, 4, 8), "compressed-tensors")
    group = int(weights.get("group_size") or -1) if weights["strategy"] == "group" else -1
    symmetric = bool(weights.get("symmetric", True))
    names = sorted(k.removesuffix(".weight_packed") for k in tensors if k.endswith(".weight_packed"))
    layers = {n: read_layer(tensors, n, bits, group, symmetric) for n in names}
    return Imported("compressed-tensors", bits, layers)
