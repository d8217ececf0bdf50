"""qlora (Dettmers et al., 2023): LM Linears in NF4 with double-quantized statistics (bitsandbytes) and
LoRA adapters on them (peft). tune trains it; eval rebuilds it to load a tuned run."""

import torch
from torch import nn

from qslaw_pipe.errors import QslawError


def to_nf4(model: nn.Module, names: list[str], compute_dtype: torch.dtype = torch.float32) -> None:
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
            compute_dtype=compute_dtype,
            compress_statistics=True,
            quant_type="nf4",
        )
        q.weight = bnb.nn.Params4bit(
            lin.weight.data.clone(), requires_grad=False, compress_statistics=True, quant_type="nf4"
        )
        if lin.bias is not None:
            q.bias = nn.Parameter(lin.bias.data.clone(), requires_grad=False)
        model.set_submodule(name, q.to(lin.weight.device))


def add_lora(model: nn.Module, names: list[str], rank: int, alpha: int, dropout: float = 0.05) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names), model
    )


def to_qlora(
    model: nn.Module, names: list[str], rank: int, alpha: int, compute_dtype: torch.dtype = torch.float32
) -> None:
    """NF4 Linears (matmuls in `compute_dtype`) with LoRA adapters (rank, alpha) on the named Linears, in place."""
    to_nf4(model, names, compute_dtype)
    add_lora(model, names, rank, alpha)


def prepare(model, method, names, calibration, options) -> None:
    to_qlora(
        model,
        names,
        options.get("lora_rank", 16),
        options.get("lora_alpha", 32),
        options.get("compute_dtype", torch.float32),
    )


def restore(model, method, tuned, calibration, tune_config: dict, compute_dtype) -> None:
    from qslaw_pipe.pipeline.targeting import quantized_names, resolve_targets
    from qslaw_pipe.pipeline.tuned import load_parameters

    torch.manual_seed(tune_config["seed"])
    names = quantized_names(resolve_targets(model))
    to_qlora(model, names, tune_config["lora_rank"], tune_config["lora_alpha"], compute_dtype)
    load_parameters(model, tuned.tensors)
