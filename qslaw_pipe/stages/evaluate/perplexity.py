"""Perplexity over non-overlapping token windows, each scored alone (no BOS, no carried context)."""

import math

import torch
from torch import nn
from tqdm import tqdm

from qslaw_pipe.pipeline.device import Compute


@torch.no_grad()
def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    batch_size: int = 4,
    desc: str = "ppl",
    compute: Compute | None = None,
) -> float:
    """exp(mean NLL of tokens 2..L of every window); windows int64 [n, L]. The model computes on
    `compute` (default: where it is, in its dtype)."""
    compute = compute or Compute(next(model.parameters()).device, torch.float32)
    nll, count = 0.0, 0
    for i in tqdm(range(0, len(windows), batch_size), desc=desc, leave=False):
        ids = windows[i : i + batch_size].to(compute.device)
        with compute.autocast():
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        )
        nll += loss.item()
        count += ids[:, 1:].numel()
    return math.exp(nll / count)
