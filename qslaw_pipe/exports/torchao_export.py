"""torchao int4 tensor subclasses built from the fold artifact's codes (never re-quantized).

Portable checkpoint (what `export --format torchao` writes): a Hugging Face directory whose quantized LM
Linears hold `IntxUnpackedToInt8Tensor` (qdata int8 = code - 8, zero_point int8 = zp - 8, scale = delta,
block (1, b)), with `quantization_config` (torchao, IntxWeightOnlyConfig) in config.json, so
`AutoModelForImageTextToText.from_pretrained(dir)` loads it. `b` is the gcd of every layer's group size
and width: a short last group (576 = 4 x 128 + 64) is stored as blocks of 64 with each 128-group's
qparams repeated (exact; the bytes of the repeated scales are the price).

`load_torchao(dir)` loads it and, on CPU, packs every such weight into `Int4OpaqueTensor` (tinygemm
layout: w = (q - 8) * scale + zero with zero = delta * (8 - zp)). Packed bytes are made at load time,
never stored, since they depend on the machine.
"""

import math
import tempfile
from pathlib import Path

import torch

from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.folded import layer_codes, load_folded_model, read_folded


def block_size(group_size: int, in_features: int) -> int:
    return math.gcd(group_size, in_features)


def repeat_groups(t: torch.Tensor, group_size: int, block: int, in_features: int) -> torch.Tensor:
    """[out, n_groups] per group -> [out, in / block] per block (each group's value repeated)."""
    reps = group_size // block
    return t.repeat_interleave(reps, dim=1)[:, : in_features // block].contiguous()


def intx_weight(codes, delta, zp, group_size: int, block: int | None = None):
    """IntxUnpackedToInt8Tensor [out, in] with blocks of `block` inputs (default: gcd(group size, in))."""
    from torchao.quantization import IntxUnpackedToInt8Tensor

    k = codes.shape[1]
    b = block or block_size(group_size, k)
    qdata = (codes.to(torch.int16) - 8).to(torch.int8)
    zero = (repeat_groups(zp, group_size, b, k).to(torch.int16) - 8).to(torch.int8)
    return IntxUnpackedToInt8Tensor(
        qdata, repeat_groups(delta.float(), group_size, b, k), zero, torch.int4, (1, b), torch.float32, None
    )


def export_torchao(fold_dir: Path, out: Path) -> dict:
    from torchao.quantization import IntxUnpackedToInt8Tensor, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup
    from transformers import AutoModelForImageTextToText, TorchAoConfig

    tensors, header = read_folded(fold_dir)
    if header["bits"] > 4:
        raise QslawError(
            f"torchao int4 export of {header['bits']}-bit codes", "calibrate with --bits 2, 3 or 4"
        )
    # one block for every layer (TorchAoConfig takes one granularity): the gcd of all groups and widths
    block = math.gcd(*(block_size(header["group_sizes"][n], k) for n, (_, k) in header["shapes"].items()))
    if block < 16:
        raise QslawError(
            f"the layers' groups only share a block of {block} inputs",
            "calibrate with --group-size 32, 64 or 128",
        )
    lm = load_folded_model(fold_dir)
    keep = [
        n for n, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear) and n not in header["shapes"]
    ]
    cfg = TorchAoConfig(
        IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(block)),
        modules_to_not_convert=keep,
    )
    with (
        tempfile.TemporaryDirectory() as tmp
    ):  # transformers writes the torchao metadata; our codes replace its weights
        lm.model.save_pretrained(tmp)
        model = AutoModelForImageTextToText.from_pretrained(tmp, quantization_config=cfg, dtype=torch.float32)
    converted = {
        n
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), IntxUnpackedToInt8Tensor)
    }
    if converted != set(header["shapes"]):
        raise QslawError(
            f"torchao converted {len(converted)} Linears, the fold artifact has {len(header['shapes'])}",
            "report this as a bug (targeting differs)",
        )
    for name in header["shapes"]:
        w = intx_weight(
            layer_codes(tensors, header, name),
            tensors[f"{name}.delta"],
            tensors[f"{name}.zero_point"],
            header["group_sizes"][name],
        )
        model.get_submodule(name).weight = torch.nn.Parameter(w, requires_grad=False)
    model.save_pretrained(out)
    lm.processor.save_pretrained(out)
    return {
        "layers": len(converted),
        "block_size": block,
        "tensor_subclass": "IntxUnpackedToInt8Tensor",
        "bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
    }


def to_opaque(w) -> torch.Tensor:
    """IntxUnpackedToInt8Tensor (CPU) -> Int4OpaqueTensor, packed for this CPU's int4 kernel."""
    from torchao.prototype.quantization.int4.int4_opaque_tensor import Int4OpaqueTensor
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    b = w.block_size[1]
    if b not in (32, 64, 128):
        raise QslawError(
            f"Int4OpaqueTensor needs block 32/64/128, this checkpoint has {b}",
            "use the IntxUnpacked weights as loaded",
        )
    codes = w.qdata.to(torch.int32) + 8
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    scale = w.scale.float()
    zero = scale * (8 - (w.zero_point.float() + 8))
    return Int4OpaqueTensor(
        packed, pack_tinygemm_scales_and_zeros(scale, zero, torch.float32), [1, b], w.shape
    )


def load_torchao(path: Path, device: str = "cpu", opaque: bool = True):
    """The exported model (IntxUnpacked weights), with CPU int4 packing applied at load time when `opaque`."""
    from torchao.quantization import IntxUnpackedToInt8Tensor
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from qslaw_pipe.pipeline.model import LoadedModel

    if device != "cpu":
        raise QslawError(f"torchao loading on {device} is not built yet", "load with device cpu")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    if opaque:
        for _, m in model.named_modules():
            w = getattr(m, "weight", None)
            if isinstance(w, IntxUnpackedToInt8Tensor):
                m.weight = torch.nn.Parameter(to_opaque(w), requires_grad=False)
    return LoadedModel(model, AutoProcessor.from_pretrained(path), Path(path))
