"""A peer's quantized checkpoint as the calibration (`calibrate --from-checkpoint DIR`): its codes, steps and
zero points for every targeted Linear (imports/), and as the adjusted weight the dequantized weight
delta * (code - zp), which rounds back to the checkpoint's codes at scale 1 (checked here), so tune starts
from the checkpoint's model and fold writes its codes bit for bit. Stored as fp16 where that rounds back
exactly, else fp32."""

from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.quant import dequantize_codes, quantize_codes
from qslaw_pipe.pipeline.qparams import Calibration, LayerQParams
from qslaw_pipe.stages.calibrate.imports.checkpoint import ImportedLayer, match_layers, read_checkpoint


def adjusted_weight(name: str, layer: ImportedLayer, bits: int) -> torch.Tensor:
    if not bool((layer.delta > 0).all()):
        raise QslawError(
            f"{name} has a scale <= 0 in the checkpoint", "import a checkpoint with positive scales"
        )
    exact = dequantize_codes(layer.codes, layer.delta, layer.zero_point, layer.group_size)
    for w in (exact.half(), exact):
        if torch.equal(
            quantize_codes(w.float(), layer.delta, layer.zero_point, bits, layer.group_size), layer.codes
        ):
            return w
    raise QslawError(
        f"{name}'s dequantized weight does not round back to its codes", "report this checkpoint"
    )


def calibrate(lm, targets, group_sizes, cfg, text_path, out, bar=True, compute=None):
    imported = read_checkpoint(Path(cfg.from_checkpoint))
    if imported.bits != cfg.bits:
        raise QslawError(
            f"the checkpoint holds {imported.bits}-bit codes, not --bits {cfg.bits}",
            f"pass --bits {imported.bits}",
        )
    names = match_layers(targets, list(imported.layers))
    named = dict(lm.model.named_modules())
    layers, weights = {}, {}
    for t in targets:
        src = imported.layers[names[t]]
        shape = tuple(named[t].weight.shape)
        if tuple(src.codes.shape) != shape:
            raise QslawError(
                f"{names[t]} is {list(src.codes.shape)} in the checkpoint but {t} is {list(shape)} in the model",
                "import a checkpoint of this model",
            )
        if src.group_size != group_sizes[t]:
            group = "per-channel" if src.group_size == shape[1] else src.group_size
            raise QslawError(
                f"the checkpoint quantizes {names[t]} in groups of {src.group_size}, not --group-size {cfg.group_size}",
                f"pass --group-size {group}",
            )
        layers[t] = LayerQParams(src.delta, src.zero_point, cfg.bits, src.group_size)
        weights[t] = adjusted_weight(names[t], src, cfg.bits)
    unused = len(imported.layers) - len(set(names.values()))
    return Calibration(layers, "checkpoint", cfg.bits, weights), {
        "blocks": [],
        "imported": {"format": imported.format, "layers": len(layers), "checkpoint_layers_unused": unused},
    }
