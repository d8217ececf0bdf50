"""The calibrate artifact as one typed record, `Calibration`, which every stage that reads it gets from
`load_calibrated` (tune, fold, eval, the benches), whichever calibrator wrote it.

`R/calibrate/qparams.safetensors`, per quantized Linear `<name>`: `<name>.delta` fp32 and `<name>.zero_point`
uint8, both [out, n_groups]; any other per-layer tensor a calibrator keeps (`<name>.lwc_upper` /
`.lwc_lower`: OmniQuant's clipping logits); and, when a calibrator changed the weights its codes round from
(learned rounding, GPTQ-style updates, an imported checkpoint), `<name>.weight` [out, in], which the
consumers put into the model before they quantize it (`Calibration.apply`). The header holds bits, the group
size per layer and the method. Artifacts written before `weight` existed read the same way, without it.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from qslaw_pipe.kernels.quant import fake_quant, fake_quant_per_token
from qslaw_pipe.pipeline.artifact import Artifact
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors

QPARAMS_FILE = "qparams.safetensors"
WEIGHT = "weight"


@dataclass(frozen=True)
class LayerQParams:
    """One quantized Linear: delta fp32, zero_point uint8 [out, n_groups]; `extra`: the calibrator's other
    per-layer tensors by key."""

    delta: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    group_size: int
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """layers: qparams by module name; weights: adjusted weights [out, in] by module name (empty when the
    calibrator kept the model's own); method: the calibrator; bits: code width."""

    layers: dict[str, LayerQParams]
    method: str
    bits: int
    weights: dict[str, torch.Tensor] = field(default_factory=dict)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Put the adjusted weights into the model's Linears, in place (no-op when there are none)."""
        for name, w in self.weights.items():
            linear = model.get_submodule(name)
            linear.weight.copy_(w.to(linear.weight.device, linear.weight.dtype))
        return model


def write_calibration(out: Path, calibration: Calibration) -> None:
    """Store `calibration` as `out/qparams.safetensors` (layout above)."""
    tensors = {}
    for name, q in calibration.layers.items():
        tensors.update({f"{name}.delta": q.delta, f"{name}.zero_point": q.zero_point})
        tensors.update({f"{name}.{k}": v for k, v in q.extra.items()})
    tensors.update({f"{name}.{WEIGHT}": w for name, w in calibration.weights.items()})
    header = {
        "bits": calibration.bits,
        "group_sizes": {n: q.group_size for n, q in calibration.layers.items()},
        "method": calibration.method,
        "layout": "delta,zero_point [out, n_groups]",
    }
    save_tensors(Path(out) / QPARAMS_FILE, tensors, header)


def load_calibrated(artifact: Artifact) -> Calibration:
    """The calibrate artifact's record (verify the artifact first: read_artifact / run_stage do)."""
    tensors, header = load_tensors(Path(artifact.path) / QPARAMS_FILE)
    layers, weights = {}, {}
    for name, gs in header["group_sizes"].items():
        own = {
            k[len(name) + 1 :]: v
            for k, v in tensors.items()
            if k.startswith(f"{name}.") and "." not in k[len(name) + 1 :]
        }
        if WEIGHT in own:
            weights[name] = own.pop(WEIGHT)
        delta, zp = own.pop("delta"), own.pop("zero_point")
        layers[name] = LayerQParams(delta, zp, header["bits"], gs, own)
    return Calibration(
        layers, header.get("method", artifact.config.get("method", "?")), header["bits"], weights
    )


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
    """Replace each listed Linear's weight by its fake-quantized value, in place (adjusted weights, if any,
    already applied: Calibration.apply)."""
    named = dict(model.named_modules())
    for name, q in qparams.items():
        linear = named[name]
        with torch.no_grad():
            linear.weight.copy_(
                fake_quant(linear.weight.float(), q.delta, q.zero_point, q.bits, q.group_size)
            )
    return model
