"""Rebuild a model in a tuning method's form, and load a finished `R/tune/` artifact for inference."""

from pathlib import Path

import torch

from qslaw_pipe.pipeline.artifact import Artifact, read_artifact
from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.model import LoadedModel, load_model
from qslaw_pipe.pipeline.qparams import load_qparams
from qslaw_pipe.pipeline.qslaw_linear import bake_qslaw
from qslaw_pipe.pipeline.targeting import quantized_names, resolve_targets
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.pipeline.tune_methods import QUANTIZED, load_trainable, prepare_method

TRAINABLE_FILE = "trainable.safetensors"


def build_method_model(
    model_dir: Path,
    method: str,
    calib: Artifact | None,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    compiled: bool = False,
) -> LoadedModel:
    """The base model at `model_dir` turned into `method`'s trainable form."""
    lm = load_model(model_dir)
    if not lm.multimodal:
        raise QslawError(f"{model_dir} is not a LLaVA-style model", "tune needs a vision tower and projector")
    qparams = load_qparams(calib) if calib is not None else None
    names = sorted(qparams) if qparams else quantized_names(resolve_targets(lm.model))
    prepare_method(lm.model, method, names, qparams, lora_rank, lora_alpha, compiled=compiled)
    return lm


def load_tuned(run_dir: Path) -> tuple[LoadedModel, Artifact]:
    """R/tune's model ready for inference (QSLAW weights baked into plain Linears), and its artifact."""
    tune = read_artifact(run_dir, "tune")
    cfg = tune.config
    model_dir = Path(tune.manifest["inputs"]["model"]["path"])
    calib = read_artifact(run_dir, "calibrate") if cfg["method"] in QUANTIZED else None
    torch.manual_seed(cfg["seed"])
    lm = build_method_model(model_dir, cfg["method"], calib, cfg["lora_rank"], cfg["lora_alpha"])
    tensors, _ = load_tensors(tune.path / TRAINABLE_FILE)
    load_trainable(lm.model, tensors)
    bake_qslaw(lm.model)
    lm.model.requires_grad_(False)
    return lm.__class__(lm.model.eval(), lm.processor, model_dir), tune
