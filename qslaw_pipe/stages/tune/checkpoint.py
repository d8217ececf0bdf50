"""Training checkpoints for resume, kept apart from the artifact's weights.

One safetensors file: trainable tensors under `model/<name>`, AdamW state under `optim/<i>/<key>`,
the torch RNG under `rng/torch` (and the current CUDA device's under `rng/cuda`); the JSON header holds the step reached, the optimizer's param groups,
the scheduler's state and the metric rows so far. Written atomically (pipeline/tensors.py).
"""

from pathlib import Path

import torch

from qslaw_pipe.pipeline.distributed import full, like
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors


def save_checkpoint(
    path: Path, model, optimizer, scheduler, step: int, rows: list[dict], write: bool = True
) -> None:
    """Whole tensors whatever the sharding (under FSDP2 every rank gathers; `write` on one of them)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    tensors = {f"model/{n}": full(p.detach()).contiguous() for n, p in params.items()}
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim/{i}/{key}"] = full(value.detach()).contiguous()
    if not write:
        return
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng/cuda"] = torch.cuda.get_rng_state()
    header = {
        "step": step,
        "param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
        "rows": rows,
    }
    save_tensors(path, tensors, header)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore everything saved; returns (step reached, metric rows)."""
    tensors, header = load_tensors(path)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("model/"):
                param = params[key[len("model/") :]]
                param.copy_(like(value, param))
    ordered = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, i, name = key.split("/", 2)
            state.setdefault(int(i), {})[name] = like(value, ordered[int(i)])
    optimizer.load_state_dict({"state": state, "param_groups": header["param_groups"]})
    scheduler.load_state_dict(header["scheduler"])
    torch.set_rng_state(tensors["rng/torch"])
    if "rng/cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng/cuda"])
    return header["step"], header["rows"]
