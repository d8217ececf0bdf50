"""A finished `R/tune/` run as a plain PyTorch model for inference, from the artifacts alone.

qslaw / frozen: every quantized Linear holds its tuned fake-quant weight W_q(s) (kernels/qslaw.py,
the same values fold packs, from the weights in the dtype they were tuned in); fp: the tuned LM
weights; qlora: NF4 + LoRA rebuilt (pipeline/qlora.py) with the tuned adapters. The tuned projector is
loaded in every case.
"""

from pathlib import Path

import torch

from qslaw_pipe.kernels.qslaw import dequant_scaled
from qslaw_pipe.kernels.quant import to_groups
from qslaw_pipe.pipeline.artifact import Artifact, read_artifact
from qslaw_pipe.pipeline.device import Compute, resolve
from qslaw_pipe.pipeline.model import LoadedModel, load_model, recorded_model
from qslaw_pipe.pipeline.qlora import to_qlora
from qslaw_pipe.pipeline.qparams import LayerQParams, load_qparams
from qslaw_pipe.pipeline.targeting import quantized_names, resolve_targets
from qslaw_pipe.pipeline.tuned import QUANTIZED, TunedTensors, load_parameters, read_tuned


@torch.no_grad()
def _bake(linear: torch.nn.Linear, q: LayerQParams, scale: torch.Tensor | None, dtype: torch.dtype) -> None:
    delta, zp = q.delta.float(), q.zero_point.float()
    s = torch.ones_like(delta) if scale is None else scale
    w_groups = to_groups(linear.weight.detach().to(dtype), q.group_size)
    linear.weight.copy_(dequant_scaled(w_groups, s, delta, zp, q.bits, linear.in_features))


def apply_tuned(
    lm: LoadedModel,
    tuned: TunedTensors,
    qparams: dict[str, LayerQParams] | None,
    cfg: dict,
    compute_dtype: torch.dtype = torch.float32,
) -> None:
    """Turn the base model into the tuned one, in place (cfg: the tune artifact's config)."""
    if tuned.method in QUANTIZED:
        load_parameters(lm.model, tuned.without_scales(qparams))
        for name, q in qparams.items():
            _bake(lm.model.get_submodule(name), q, tuned.scale(name), tuned.weight_dtype)
        return
    if tuned.method == "qlora":
        torch.manual_seed(cfg["seed"])
        names = quantized_names(resolve_targets(lm.model))
        to_qlora(lm.model, names, cfg["lora_rank"], cfg["lora_alpha"], compute_dtype)
    load_parameters(lm.model, tuned.tensors)


def load_tuned(run_dir: Path, compute: Compute | None = None) -> tuple[LoadedModel, Artifact]:
    """R/tune's model ready for inference on `compute` (default: CPU fp32), and its artifact. Tuned
    weights are rebuilt in fp32 on the CPU, then moved and cast (QLoRA is rebuilt on the device, where
    bitsandbytes quantizes)."""
    compute = compute or resolve("cpu", "fp32")
    tune = read_artifact(run_dir, "tune")
    model_dir = recorded_model(tune)
    lm = load_model(model_dir)
    tuned = read_tuned(tune)
    qparams = load_qparams(read_artifact(run_dir, "calibrate")) if tuned.method in QUANTIZED else None
    if tuned.method == "qlora":
        lm.model.to(compute.device)
    apply_tuned(lm, tuned, qparams, tune.config, compute.dtype)
    lm.model.requires_grad_(False)
    if tuned.method != "qlora":
        lm.model.to(compute.device, compute.dtype)
    return LoadedModel(lm.model.eval(), lm.processor, model_dir), tune
