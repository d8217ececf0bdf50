"""The calibrate artifact's tensors: per quantized layer `<name>.delta` fp32 and `<name>.zero_point`
uint8, both [out, n_groups], plus OmniQuant's clipping logits `<name>.lwc_upper` / `.lwc_lower`.
The header holds bits, group size per layer and the layer list."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qslaw_pipe.kernels.quant import fake_quant, fake_quant_per_token
from qslaw_pipe.pipeline.artifact import Artifact
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors

QPARAMS_FILE = "qparams.safetensors"


@dataclass(frozen=True)
class LayerQParams:
    delta: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    group_size: int


def write_qparams(
    out: Path, tensors: dict[str, torch.Tensor], bits: int, group_sizes: dict, method: str
) -> None:
    """Store per-layer `<name>.delta`, `<name>.zero_point` (and any extra per-layer tensors) with the header."""
    header = {
        "bits": bits,
        "group_sizes": group_sizes,
        "method": method,
        "layout": "delta,zero_point [out, n_groups]",
    }
    save_tensors(Path(out) / QPARAMS_FILE, tensors, header)


def load_qparams(artifact: Artifact) -> dict[str, LayerQParams]:
    tensors, header = load_tensors(Path(artifact.path) / QPARAMS_FILE)
    return {
        name: LayerQParams(tensors[f"{name}.delta"], tensors[f"{name}.zero_point"], header["bits"], gs)
        for name, gs in header["group_sizes"].items()
    }


@torch.no_grad()
def quantize_inputs(model: nn.Module, names: list[str], bits: int) -> list:
    """Simulated activation quantization: each named Linear's input fake-quantized per token at `bits`
    (kernels/quant.fake_quant_per_token) by a forward pre-hook; returns the hooks (remove() undoes)."""
    named = dict(model.named_modules())
    return [
        named[n].register_forward_pre_hook(lambda _m, args: (fake_quant_per_token(args[0], bits), *args[1:]))
        for n in names
    ]


def apply_fake_quant(model: nn.Module, qparams: dict[str, LayerQParams]) -> nn.Module:
    """Replace each listed Linear's weight by its fake-quantized value, in place."""
    named = dict(model.named_modules())
    for name, q in qparams.items():
        linear = named[name]
        with torch.no_grad():
            linear.weight.copy_(
                fake_quant(linear.weight.float(), q.delta, q.zero_point, q.bits, q.group_size)
            )
    return model
