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

from qslaw_pipe.pipeline import modules
from qslaw_pipe.stages.tune.batches import IGNORE


def batch_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, {"multimodal": token-loss share, "text": ...}) for a batch from batches.collate; the shares
    are the modality's mean token loss in a single process and sum to it over the ranks."""
    keys = (
        ("inputs_embeds", "attention_mask") if "inputs_embeds" in batch else ("input_ids", "attention_mask")
    )
    inputs = {**{k: batch[k] for k in keys}, **batch.get("inputs", {})}
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
    """batch_loss as a module's forward: what DistributedDataParallel / FSDP2 wrap to reduce gradients.
    `touch_projector`: a share without images adds 0 x the projector's weights to its token embeddings, so
    every rank reduces a (zero) projector gradient, at the point of backward where an image would deliver it
    (FSDP2 has no unused-parameter search, and its ranks must reduce their groups in the same order)."""

    def __init__(self, model: nn.Module, touch_projector: bool = False):
        super().__init__()
        self.model, self.touch_projector = model, touch_projector

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        if self.touch_projector and not batch.get("inputs"):
            trainable = [p for p in modules.projector_parameters(self.model).values() if p.requires_grad]
            embeds = self.model.get_input_embeddings()(batch["input_ids"])
            touched = embeds + sum(0.0 * p.sum() for p in trainable).to(embeds.dtype)
            batch = {**{k: v for k, v in batch.items() if k != "input_ids"}, "inputs_embeds": touched}
        return batch_loss(self.model, batch)
