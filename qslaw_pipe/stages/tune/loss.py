"""Next-token loss of a LLaVA-style model on a mixed batch, computing logits only where scored.

The LM head runs on scored positions alone (a multimodal sample scores ~2 answer tokens out of ~100),
which removes most of the vocabulary projection's cost. The batch loss weights the two modalities by
their sample counts: (n_mm * mean_mm + n_text * mean_text) / (n_mm + n_text), with counts and token
means over the whole global batch (`batch["totals"]`): a rank of a data-parallel run holding a share of
the batch returns its share of that loss, and the shares sum to the single-process loss.
"""

import torch
import torch.nn.functional as F
from torch import nn

from qslaw_pipe.stages.tune.batches import IGNORE


def batch_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, {"multimodal": token-loss share, "text": ...}) for a batch from batches.collate; the shares
    are the modality's mean token loss in a single process and sum to it over the ranks."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values") if k in batch}
    hidden = model.model(**inputs, use_cache=False).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    scored = labels != IGNORE
    token_loss = F.cross_entropy(model.lm_head(hidden[scored]).float(), labels[scored], reduction="none")
    rows = scored.nonzero()[:, 0]
    is_text = batch["is_text"]
    totals = batch["totals"]
    parts, means = [], {}
    for name, rows_mask in (("multimodal", ~is_text[rows]), ("text", is_text[rows])):
        n, tokens = totals.get(name, (0, 0))
        if n:
            mean = token_loss[rows_mask].sum() / max(tokens, 1)
            parts.append(mean * n)
            means[name] = mean.item()
    return torch.stack(parts).sum() / sum(n for n, _ in totals.values()), means


class LossModule(nn.Module):
    """batch_loss as a module's forward: what DistributedDataParallel wraps to all-reduce gradients."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        return batch_loss(self.model, batch)
