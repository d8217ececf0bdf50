"""A loaded model turned into a tuning method's trainable form (the methods: pipeline/methods/, one file
each). Every method trains the projector; the vision tower is frozen in all of them, and frozen weights get
no gradient buffers.
"""

from pathlib import Path

import torch
from torch import nn

from qslaw_pipe.pipeline import distributed, modules
from qslaw_pipe.pipeline.artifact import Artifact
from qslaw_pipe.pipeline.device import Compute, resolve
from qslaw_pipe.pipeline.methods import method
from qslaw_pipe.pipeline.model import LoadedModel, load_model
from qslaw_pipe.pipeline.qparams import Calibration, load_calibrated
from qslaw_pipe.pipeline.targeting import quantized_names, resolve_targets


def prepare_method(
    model: nn.Module,
    name: str,
    names: list[str],
    calibration: Calibration | None,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    compiled: bool = False,
    compute_dtype: torch.dtype = torch.float32,
    keep: bool = False,
) -> None:
    """Turn `model` into method `name`'s trainable form; `names` are the LM Linears the method quantizes.
    Trainable tensors are fp32 (master weights); frozen ones keep the dtype they were loaded in.
    `keep`: quantized layers save their weights from forward for backward (QslawLinear)."""
    spec = method(name)
    model.requires_grad_(False)
    options = dict(
        lora_rank=lora_rank, lora_alpha=lora_alpha, compiled=compiled, compute_dtype=compute_dtype, keep=keep
    )
    spec.impl().prepare(model, spec, names, calibration, options)
    for p in modules.projector_parameters(model).values():
        p.requires_grad_(True)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def build_method_model(
    model_dir: Path,
    name: str,
    calib: Artifact | None,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    compiled: bool = False,
    compute: Compute | None = None,
    keep: bool | None = None,
) -> LoadedModel:
    """The base model at `model_dir` on `compute`'s device turned into method `name`'s trainable form: frozen
    weights in the compute dtype (fp trains fp32 master weights under autocast instead), a calibrator's
    adjusted weights put in first. `keep` None: quantized weights kept from forward to backward on the CPU,
    rebuilt on CUDA (memory)."""
    spec = method(name)
    compute = compute or resolve("cpu", "fp32")
    lm = load_model(model_dir, torch.float32 if spec.full_precision else compute.dtype, compute.device)
    calibration = load_calibrated(calib) if calib is not None else None
    if calibration is not None:
        calibration.apply(lm.model)
    names = sorted(calibration.layers) if calibration else quantized_names(resolve_targets(lm.model))
    keep = not compute.cuda if keep is None else keep
    prepare_method(lm.model, name, names, calibration, lora_rank, lora_alpha, compiled, compute.dtype, keep)
    return lm


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors by parameter name (what the tune artifact stores); whole tensors under FSDP2 (every
    rank calls this)."""
    return {
        n: distributed.full(p.detach()).clone().contiguous()
        for n, p in model.named_parameters()
        if p.requires_grad
    }
