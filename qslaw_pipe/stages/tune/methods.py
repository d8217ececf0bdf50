"""What each tuning method trains, on one LLaVA-style model, in place.

  qslaw   calibrated int-k LM as QslawLinear (trainable per-group scales) + projector
  frozen  the same quantized LM with scales fixed at 1 + projector (projector-only baseline)
  fp      full-precision LM (all its weights) + projector, as LLaVA fine-tunes
  qlora   LM Linears in NF4 with double quantization (bitsandbytes) + LoRA on them + projector
  projector  the full-precision LM frozen, projector only (LLaVA's stage-1 alignment: `qslaw-pipe align`)

The vision tower is frozen in every method; frozen weights get no gradient buffers.
"""

from pathlib import Path

import torch
from torch import nn

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline import distributed, modules
from qslaw_pipe.pipeline.artifact import Artifact
from qslaw_pipe.pipeline.device import Compute, resolve
from qslaw_pipe.pipeline.model import LoadedModel, load_model
from qslaw_pipe.pipeline.qlora import to_qlora
from qslaw_pipe.pipeline.qparams import LayerQParams, load_qparams
from qslaw_pipe.pipeline.targeting import quantized_names, resolve_targets
from qslaw_pipe.pipeline.tuned import FULL_PRECISION, METHODS, QUANTIZED
from qslaw_pipe.stages.tune.qslaw_linear import attach_qslaw


def prepare_method(
    model: nn.Module,
    method: str,
    names: list[str],
    qparams: dict[str, LayerQParams] | None,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    compiled: bool = False,
    compute_dtype: torch.dtype = torch.float32,
    keep: bool = False,
) -> None:
    """Turn `model` into `method`'s trainable form; `names` are the LM Linears the method quantizes.
    Trainable tensors are fp32 (master weights); frozen ones keep the dtype they were loaded in.
    `keep`: quantized layers save their weights from forward for backward (QslawLinear)."""
    if method not in METHODS:
        raise QslawError(f"unknown --method {method}", f"use one of {', '.join(METHODS)}")
    model.requires_grad_(False)
    if method in QUANTIZED:
        if qparams is None:
            raise QslawError(
                f"--method {method} needs a calibrate artifact", "run `qslaw-pipe calibrate` first"
            )
        attach_qslaw(model, {n: qparams[n] for n in names}, method == "qslaw", compiled, keep)
    elif method == "fp":
        modules.decoder(model).requires_grad_(True)
        model.get_output_embeddings().requires_grad_(True)
    elif method == "qlora":
        to_qlora(model, names, lora_rank, lora_alpha, compute_dtype)
    for p in modules.projector_parameters(model).values():
        p.requires_grad_(True)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def build_method_model(
    model_dir: Path,
    method: str,
    calib: Artifact | None,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    compiled: bool = False,
    compute: Compute | None = None,
    keep: bool | None = None,
) -> LoadedModel:
    """The base model at `model_dir` on `compute`'s device turned into `method`'s trainable form: frozen
    weights in the compute dtype (fp trains fp32 master weights under autocast instead). `keep` None:
    quantized weights kept from forward to backward on the CPU, rebuilt on CUDA (memory)."""
    compute = compute or resolve("cpu", "fp32")
    lm = load_model(model_dir, torch.float32 if method in FULL_PRECISION else compute.dtype, compute.device)
    qparams = load_qparams(calib) if calib is not None else None
    names = sorted(qparams) if qparams else quantized_names(resolve_targets(lm.model))
    keep = not compute.cuda if keep is None else keep
    prepare_method(lm.model, method, names, qparams, lora_rank, lora_alpha, compiled, compute.dtype, keep)
    return lm


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors by parameter name (what the tune artifact stores); whole tensors under FSDP2 (every
    rank calls this)."""
    return {
        n: distributed.full(p.detach()).clone().contiguous()
        for n, p in model.named_parameters()
        if p.requires_grad
    }
