"""torchao int4 tensor subclasses built from the fold artifact's codes (never re-quantized).

Portable checkpoint (what `export --format torchao` writes): a Hugging Face directory whose quantized LM
Linears hold `IntxUnpackedToInt8Tensor` (qdata int8 = code - 8, zero_point int8 = zp - 8, scale = delta,
block (1, b)), with `quantization_config` (torchao, IntxWeightOnlyConfig) in config.json, so
`AutoModelForImageTextToText.from_pretrained(dir, trust_remote_code=False)` loads it. `b` is the gcd of every layer's group size
and width: a short last group (576 = 4 x 128 + 64) is stored as blocks of 64 with each 128-group's
qparams repeated (exact; the bytes of the repeated scales are the price).

`load_torchao(dir, device)` loads it and packs every such weight for the device's int4 kernel: on CPU
`Int4OpaqueTensor`, on CUDA `Int4TilePackedTo4dTensor` (tinygemm tile layout, bf16 scales; K padded
to 1024 and N to 8 as torchao does). Both use w = (q - 8) * scale + zero with zero = delta * (8 - zp).
Packed bytes are made at load time, never stored, since they depend on the machine.

Activations: bf16 by default on both devices. The CPU int4 kernel (aten._weight_int4pack_mm_for_cpu) is
vectorized for bf16 activations and takes a slow path with fp32 ones, on ATen's AVX-512 and AVX2 kernels alike
(docs/results/torchao_kernel.md, bench/torchao_cpu_kernel.py). `dtype="fp32"` keeps fp32 activations and
scales: the exact path, for checking the export against the folded model to fp32 rounding.
"""

import math
import tempfile
from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.quant import block_size, repeat_groups
from qslaw_pipe.pipeline.folded import folded_transformers, read_folded


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
    from transformers import TorchAoConfig

    from qslaw_pipe.pipeline.model import auto_class

    folded = read_folded(fold_dir)
    if folded.bits > 4:
        raise QslawError(f"torchao int4 export of {folded.bits}-bit codes", "calibrate with --bits 2, 3 or 4")
    # one block for every layer (TorchAoConfig takes one granularity): the gcd of all groups and widths
    block = math.gcd(*(block_size(q.group_size, q.shape[1]) for q in folded.layers.values()))
    if block < 16:
        raise QslawError(
            f"the layers' groups only share a block of {block} inputs",
            "calibrate with --group-size 32, 64 or 128",
        )
    lm = folded_transformers(fold_dir, folded)
    keep = [
        n for n, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear) and n not in folded.layers
    ]
    cfg = TorchAoConfig(
        IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(block)),
        modules_to_not_convert=keep,
    )
    # transformers writes the torchao metadata; our codes replace its weights
    with tempfile.TemporaryDirectory() as tmp:
        lm.model.save_pretrained(tmp)
        model = auto_class(lm.arch).from_pretrained(
            tmp, quantization_config=cfg, dtype=torch.float32, trust_remote_code=False
        )
    converted = {
        n
        for n, m in model.named_modules()
        if isinstance(getattr(m, "weight", None), IntxUnpackedToInt8Tensor)
    }
    if converted != set(folded.layers):
        raise QslawError(
            f"torchao converted {len(converted)} Linears, the fold artifact has {len(folded.layers)}",
            "report this as a bug (targeting differs)",
        )
    for name, q in folded.layers.items():
        w = intx_weight(q.codes, q.delta, q.zero_point, q.group_size)
        model.get_submodule(name).weight = torch.nn.Parameter(w, requires_grad=False)
    model.save_pretrained(out)
    lm.processor.save_pretrained(out)
    return {
        "layers": len(converted),
        "block_size": block,
        "tensor_subclass": "IntxUnpackedToInt8Tensor",
        "bytes": sum(p.stat().st_size for p in out.glob("*.safetensors")),
    }


def to_opaque(w, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """IntxUnpackedToInt8Tensor (CPU) -> Int4OpaqueTensor, packed for this CPU's int4 kernel, its scales and
    zeros in the activations' `dtype`."""
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
        packed, pack_tinygemm_scales_and_zeros(scale.to(dtype), zero.to(dtype), dtype), [1, b], w.shape
    )


def _padded(t: torch.Tensor, rows: int, cols: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, cols - t.shape[1], 0, rows - t.shape[0]), value=value)


def to_tile_packed(w, device: torch.device) -> torch.Tensor:
    """IntxUnpackedToInt8Tensor -> Int4TilePackedTo4dTensor on a CUDA device (sm80+), tinygemm's layout."""
    from torchao.quantization import Int4TilePackedTo4dTensor
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    b = w.block_size[1]
    if b not in (32, 64, 128, 256):
        raise QslawError(
            f"Int4TilePackedTo4dTensor needs block 32/64/128/256, this checkpoint has {b}",
            "use the IntxUnpacked weights as loaded",
        )
    n, k = w.shape
    n_pad, k_pad = -(-n // 8) * 8, -(-k // 1024) * 1024
    codes = _padded(w.qdata.to(torch.int32) + 8, n_pad, k_pad, 8).to(device)  # padded inputs are zero
    packed = torch.ops.aten._convert_weight_to_int4pack(
        ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8).contiguous(), 8
    )
    scale = _padded(w.scale.float(), n_pad, k_pad // b, 1.0)
    zero = scale * (8 - _padded(w.zero_point.float() + 8, n_pad, k_pad // b, 8.0))
    sz = pack_tinygemm_scales_and_zeros(scale.to(device, torch.bfloat16), zero.to(device, torch.bfloat16))
    return Int4TilePackedTo4dTensor(packed, sz, [1, b], w.shape)


DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def load_torchao(path: Path, device: str = "cpu", packed: bool = True, dtype: str = "bf16"):
    """The exported model (IntxUnpacked weights) on `device`; with `packed`, every int4 weight is packed
    at load time for the device's kernel (CPU: Int4OpaqueTensor; CUDA: Int4TilePackedTo4dTensor, bf16), and the
    rest of the model in `dtype` ("bf16", the fast path; "fp32": exact, CPU only; unpacked weights: fp32)."""
    from torchao.quantization import IntxUnpackedToInt8Tensor
    from transformers import AutoConfig

    from qslaw_pipe.pipeline.arch import arch_of
    from qslaw_pipe.pipeline.model import LoadedModel, auto_class, load_model_processor

    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda") or (dev.type == "cuda" and not torch.cuda.is_available()):
        raise QslawError(
            f"cannot load torchao int4 weights on {device}", "use device cpu, or cuda on a GPU machine"
        )
    if dev.type == "cuda" and not packed:
        raise QslawError(
            "unpacked IntxUnpacked weights load on the CPU only", "load on cuda with packed=True"
        )
    if dtype not in DTYPES or (dtype == "fp32" and dev.type == "cuda" and packed):
        raise QslawError(
            f"cannot run torchao int4 weights with {dtype} activations on {dev.type}",
            "use dtype bf16 (the fast path), or fp32 on the CPU",
        )
    act = DTYPES[dtype] if packed else torch.float32
    arch = arch_of(AutoConfig.from_pretrained(path, trust_remote_code=False))
    model = auto_class(arch).from_pretrained(path, dtype=torch.float32, trust_remote_code=False).eval()
    if packed:
        for _, m in model.named_modules():
            w = getattr(m, "weight", None)
            if isinstance(w, IntxUnpackedToInt8Tensor):
                t = to_opaque(w, act) if dev.type == "cpu" else to_tile_packed(w, dev)
                m.weight = torch.nn.Parameter(t, requires_grad=False)
    return LoadedModel(
        _move_plain(model, dev, act),
        load_model_processor(Path(path), arch),
        Path(path),
    )


def _move_plain(model, device: torch.device, dtype: torch.dtype):
    """Move every plain parameter and buffer (not the packed int4 subclasses, already placed) to device/dtype."""
    for m in model.modules():
        for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]:
            if type(t) in (torch.Tensor, torch.nn.Parameter):
                t.data = t.data.to(device, dtype if t.is_floating_point() else t.dtype)
    return model
