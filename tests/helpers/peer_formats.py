"""Writers of peers' quantized checkpoints for the import tests, from each format's published layout (the
peers' own packers need CUDA builds of torch; bench/import_check.py checks our reader against AutoRound's own
export and dequantization in the peers' venv). Codes, zero points and scales are given in our layout."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

AWQ_SLOT_OF_OUTPUT = (0, 4, 1, 5, 2, 6, 3, 7)  # output k of 8 goes to slot AWQ_SLOT_OF_OUTPUT[k]


def pack_stream(values: torch.Tensor, bits: int) -> torch.Tensor:
    """[rows, count] values in [0, 2^bits) -> int32 [rows, ceil(count * bits / 32)], a dense LSB-first stream."""
    rows, count = values.shape
    words = torch.zeros(rows, -(-count * bits // 32) + 1, dtype=torch.int64)
    v = values.to(torch.int64)
    for i in range(count):
        w, s = divmod(i * bits, 32)
        words[:, w] |= (v[:, i] << s) & 0xFFFFFFFF
        if s + bits > 32:
            words[:, w + 1] |= v[:, i] >> (32 - s)
    words = words[:, :-1]
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def gptq_tensors(codes, delta, zp, bits, gs, zero_offset=1, g_idx=None) -> dict:
    in_features = codes.shape[1]
    return {
        "qweight": pack_stream(codes, bits).t().contiguous(),
        "qzeros": pack_stream((zp.t().to(torch.int64) - zero_offset) % 2**bits, bits),
        "scales": delta.t().contiguous().half(),
        "g_idx": (torch.arange(in_features) // gs if g_idx is None else g_idx).to(torch.int32),
    }


def awq_tensors(codes, delta, zp, bits, gs) -> dict:
    def pack(values):  # [rows, out] -> AWQ's slot order, then the stream
        out = values.shape[1]
        index = torch.empty(out, dtype=torch.long)
        for k in range(out):
            index[(k // 8) * 8 + AWQ_SLOT_OF_OUTPUT[k % 8]] = k
        return pack_stream(values[:, index], 4)

    return {"qweight": pack(codes.t()), "qzeros": pack(zp.t()), "scales": delta.t().contiguous().half()}


def ct_tensors(codes, delta, zp, bits, gs, symmetric=False) -> dict:
    out = {
        "weight_packed": pack_stream(codes, bits),
        "weight_scale": delta.half(),
        "weight_shape": torch.tensor(list(codes.shape)),
    }
    if not symmetric:
        out["weight_zero_point"] = pack_stream(zp.t(), bits).t().contiguous()
    return out


def random_layer(shape, bits: int, gs: int, seed: int, symmetric: bool = False):
    """Codes, positive fp16-representable deltas and zero points for one Linear [out, in]."""
    gen = torch.Generator().manual_seed(seed)
    out, k = shape
    groups = -(-k // gs)
    codes = torch.randint(0, 2**bits, (out, k), generator=gen).to(torch.uint8)
    delta = (torch.rand(out, groups, generator=gen) * 0.02 + 0.001).half().float()
    zp = (
        torch.full((out, groups), 2 ** (bits - 1))
        if symmetric
        else torch.randint(0, 2**bits, (out, groups), generator=gen)
    ).to(torch.uint8)
    return codes, delta, zp


def write_checkpoint(out: Path, model_dir: Path, layers: dict[str, dict], qconfig: dict) -> Path:
    """`out`: the model's config (with qconfig) and one safetensors file of the layers' packed tensors."""
    out.mkdir(parents=True)
    shutil.copy(Path(model_dir) / "config.json", out / "config.json")
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = qconfig
    (out / "config.json").write_text(json.dumps(config))
    tensors = {f"{name}.{k}": v for name, ts in layers.items() for k, v in ts.items()}
    save_file(tensors, str(out / "model.safetensors"))
    return out
