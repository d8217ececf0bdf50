"""The folded model as a compressed-tensors checkpoint (W4A16 pack-quantized), for vLLM and transformers.

Layout (compressed-tensors `pack-quantized`, asymmetric int, group strategy): per quantized Linear
`weight_packed` int32 [out, in * bits / 32] (codes - 2^(bits-1), packed by compressed-tensors' own
pack_to_int32), `weight_scale` [out, in / g] in the checkpoint dtype, `weight_zero_point` int32 packed along
the output dimension, `weight_shape` [out, in]. W = (q - zp) * scale, with q = code - 8 and zp = our zero
point - 8, so the codes and zero points are exact; only the scales are rounded to the checkpoint dtype
(fp16 by default: vLLM's int4 kernels take fp16/bf16 scales), and `report` says by how much.

compressed-tensors needs every layer's width to be a multiple of one group size: `g` is the gcd of all
groups and widths (SmolLM2's 576 = 4 x 128 + 64 gives g = 64), each of our groups repeating its
qparams over its g-blocks (exact). Everything else (vision tower, projector, embeddings, norms, lm_head)
is stored in the checkpoint dtype; config.json gets the `quantization_config` and torch_dtype.
"""

import json
import math
from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.quant import block_size, repeat_groups
from qslaw_pipe.pipeline.folded import FoldedModel, read_folded
from qslaw_pipe.pipeline.model import copy_model_files

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
WEIGHTS = "model.safetensors"


def scheme_config(bits: int, group: int, ignore: list[str]) -> dict:
    """The `quantization_config` of config.json, built by compressed-tensors' own classes."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    weights = QuantizationArgs(num_bits=bits, type="int", symmetric=False, strategy="group", group_size=group)
    config = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
        format="pack-quantized",
        quantization_status="compressed",
        ignore=ignore,
    )
    return json.loads(config.model_dump_json())


def packed_layer(layer, group: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One Linear's compressed-tensors tensors (local names) from its folded codes."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    out, k = layer.shape
    offset = 1 << (layer.bits - 1)
    q = (layer.codes.to(torch.int16) - offset).to(torch.int8)
    zp = (repeat_groups(layer.zero_point, layer.group_size, group, k).to(torch.int16) - offset).to(torch.int8)
    tensors = {
        "weight_packed": pack_to_int32(q, layer.bits),
        "weight_scale": repeat_groups(layer.delta.float(), layer.group_size, group, k).to(dtype),
        "weight_zero_point": pack_to_int32(zp, layer.bits, packed_dim=0).contiguous(),
        "weight_shape": torch.tensor([out, k]),
    }
    if layer.bias is not None:
        tensors["bias"] = layer.bias.to(dtype)
    return tensors


def common_group(folded: FoldedModel) -> int:
    group = math.gcd(*(block_size(q.group_size, q.shape[1]) for q in folded.layers.values()))
    if group < 32 or folded.bits > 8:
        raise QslawError(
            f"the layers' groups only share a block of {group} inputs for compressed-tensors",
            "calibrate with --group-size 32, 64 or 128",
        )
    return group


def export_compressed_tensors(fold_dir: Path, out: Path, dtype: str = "fp16") -> dict:
    """Write the checkpoint into `out` (model files, processor, config with quantization_config);
    returns what was written and the scales' rounding error."""
    from safetensors.torch import save_file
    from transformers import AutoConfig

    folded = read_folded(fold_dir)
    group, torch_dtype = common_group(folded), DTYPES[dtype]
    config = AutoConfig.from_pretrained(fold_dir, trust_remote_code=False)
    state = {}
    for name, layer in folded.layers.items():
        state.update({f"{name}.{k}": v for k, v in packed_layer(layer, group, torch_dtype).items()})
    for name, t in folded.tensors.items():
        state[name] = t.to(torch_dtype) if t.is_floating_point() else t
    for name, source in folded.tied.items():
        if not tied_embeddings(config):
            state[name] = state[source]
    linears = _linear_names(config)
    ignore = sorted(n for n in linears if n not in folded.layers)
    copy_model_files(fold_dir, out)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS), metadata={"format": "pt"})
    config_json = json.loads((out / "config.json").read_text())
    config_json["quantization_config"] = scheme_config(folded.bits, group, ignore)
    config_json["torch_dtype"] = config_json["dtype"] = str(torch_dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(config_json, indent=2))
    deltas = torch.cat([q.delta.float().reshape(-1) for q in folded.layers.values()])
    rounding = ((deltas.to(torch_dtype).float() - deltas).abs() / deltas.abs().clamp_min(1e-30)).max()
    return {
        "layers": len(folded.layers),
        "bits": folded.bits,
        "group_size": group,
        "dtype": dtype,
        "scale_max_relative_rounding": float(rounding),
        "bytes": (out / WEIGHTS).stat().st_size,
    }


def tied_embeddings(config) -> bool:
    """Whether lm_head shares the embeddings: the top config says so for some families (Qwen2-VL), the
    text config for others."""
    top = getattr(config, "tie_word_embeddings", None)
    return bool(top if top is not None else config.get_text_config().tie_word_embeddings)


def _linear_names(config) -> list[str]:
    """Every Linear's module name in a model built from `config` (on the meta device: no memory)."""
    from qslaw_pipe.pipeline.arch import arch_of
    from qslaw_pipe.pipeline.model import auto_class

    with torch.device("meta"):
        model = auto_class(arch_of(config)).from_config(config)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def decompressed_state(out: Path) -> dict[str, torch.Tensor]:
    """The checkpoint at `out` read back through compressed-tensors' own pack-quantized decompressor: every
    quantized Linear's `weight` as a loader reconstructs it, every other tensor as stored (fp32)."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig
    from safetensors.torch import load_file

    config = json.loads((out / "config.json").read_text())["quantization_config"]
    scheme = QuantizationConfig.model_validate(config).config_groups["group_0"]
    stored = load_file(str(out / WEIGHTS))
    modules = {k.removesuffix(".weight_packed") for k in stored if k.endswith(".weight_packed")}
    state = {k: v.float() for k, v in stored.items() if not k.startswith(tuple(f"{m}." for m in modules))}
    for m in modules:
        local = {k[len(m) + 1 :]: v for k, v in stored.items() if k.startswith(f"{m}.")}
        weight = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
        state[f"{m}.weight"] = weight.float()
        if "bias" in local:
            state[f"{m}.bias"] = local["bias"].float()
    return state
