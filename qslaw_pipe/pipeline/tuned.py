"""The tune artifact's tensors: `R/tune/trainable.safetensors` holds every trained tensor by parameter name
(header: method, tensors). For `qslaw` the per-group scales of a quantized Linear `<name>` are
`<name>.scale` fp32 [out, n_groups]; the projector (and LoRA or LM weights for the baselines) keep their
model parameter names. fold and eval read it through `read_tuned`; tune writes it with `write_tuned`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.artifact import Artifact
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors

TRAINABLE_FILE = "trainable.safetensors"
SCALE_SUFFIX = ".scale"


@dataclass(frozen=True)
class TunedTensors:
    """method; trained tensors by name; weight_dtype: the dtype the frozen LM weights had while tuning
    (fold and eval rebuild W_q from the weights in that dtype, so they reproduce what was trained)."""

    method: str
    tensors: dict[str, torch.Tensor]
    weight_dtype: torch.dtype = torch.float32

    def scale(self, layer: str) -> torch.Tensor | None:
        """The learned scales of quantized Linear `layer`, or None (frozen: s = 1)."""
        return self.tensors.get(layer + SCALE_SUFFIX)

    def without_scales(self, layers) -> dict[str, torch.Tensor]:
        """Every trained tensor except the scales of `layers` (the projector, for qslaw)."""
        scales = {n + SCALE_SUFFIX for n in layers}
        return {k: v for k, v in self.tensors.items() if k not in scales}


def write_tuned(out: Path, method: str, tensors: dict[str, torch.Tensor]) -> None:
    save_tensors(Path(out) / TRAINABLE_FILE, tensors, {"method": method, "tensors": len(tensors)})


def read_tuned(artifact: Artifact) -> TunedTensors:
    tensors, _ = load_tensors(Path(artifact.path) / TRAINABLE_FILE)
    dtype = getattr(torch, artifact.metrics.get("weight_dtype", "float32"))
    return TunedTensors(artifact.config["method"], tensors, dtype)


def load_parameters(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy tensors into the model's parameters of the same names, refusing names it does not have."""
    params = dict(model.named_parameters())
    missing = [n for n in tensors if n not in params]
    if missing:
        raise QslawError(
            f"tuned tensor {missing[0]} has no place in the model",
            "tune and evaluate with the same --method and model",
        )
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t)
