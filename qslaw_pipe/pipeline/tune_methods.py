"""What each tuning method trains, on one LLaVA-style model, in place.

  qslaw   calibrated int-k LM as QslawLinear (trainable per-group scales) + projector
  frozen  the same quantized LM with scales fixed at 1 + projector (projector-only baseline)
  fp      full-precision LM (all its weights) + projector, as LLaVA fine-tunes
  qlora   LM Linears in NF4 with double quantization (bitsandbytes) + LoRA on them + projector

The vision tower is frozen in every method; frozen weights get no gradient buffers.
"""

import torch
from torch import nn

from qslaw_pipe.pipeline import modules
from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.qparams import LayerQParams
from qslaw_pipe.pipeline.qslaw_linear import attach_qslaw

METHODS = ("qslaw", "fp", "qlora", "frozen")
QUANTIZED = ("qslaw", "frozen")


def to_nf4(model: nn.Module, names: list[str]) -> None:
    """Swap the named Linears for bitsandbytes NF4 Linear4bit (double-quantized statistics), in place."""
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise QslawError("--method qlora needs bitsandbytes", "pip install 'qslaw-pipe[qlora]'") from e
    for name in names:
        lin = model.get_submodule(name)
        q = bnb.nn.Linear4bit(
            lin.in_features,
            lin.out_features,
            bias=lin.bias is not None,
            compute_dtype=torch.float32,
            compress_statistics=True,
            quant_type="nf4",
        )
        q.weight = bnb.nn.Params4bit(
            lin.weight.data.clone(), requires_grad=False, compress_statistics=True, quant_type="nf4"
        )
        if lin.bias is not None:
            q.bias = nn.Parameter(lin.bias.data.clone(), requires_grad=False)
        model.set_submodule(name, q.to(lin.weight.device))


def add_lora(model: nn.Module, names: list[str], rank: int, alpha: int, dropout: float) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names), model
    )


def prepare_method(
    model: nn.Module,
    method: str,
    names: list[str],
    qparams: dict[str, LayerQParams] | None,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    compiled: bool = False,
) -> None:
    """Turn `model` into `method`'s trainable form; `names` are the LM Linears the method quantizes."""
    if method not in METHODS:
        raise QslawError(f"unknown --method {method}", f"use one of {', '.join(METHODS)}")
    model.requires_grad_(False)
    if method in QUANTIZED:
        if qparams is None:
            raise QslawError(
                f"--method {method} needs a calibrate artifact", "run `qslaw-pipe calibrate` first"
            )
        attach_qslaw(model, {n: qparams[n] for n in names}, trainable=method == "qslaw", compiled=compiled)
    elif method == "fp":
        modules.decoder(model).requires_grad_(True)
        model.get_output_embeddings().requires_grad_(True)
    else:
        to_nf4(model, names)
        add_lora(model, names, lora_rank, lora_alpha, lora_dropout)
    modules.projector(model).requires_grad_(True)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors by parameter name (what the tune artifact stores)."""
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
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
