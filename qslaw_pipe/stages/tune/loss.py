"""Next-token loss of a LLaVA-style model on a mixed batch, computing logits only where scored.

The LM head runs on scored positions alone (a multimodal sample scores ~2 answer tokens out of ~100),
which removes most of the vocabulary projection's cost. The batch loss weights the two modalities by
their sample counts: (n_mm * mean_mm + n_text * mean_text) / (n_mm + n_text).
"""

import torch
import torch.nn.functional as F

from qslaw_pipe.stages.tune.batches import IGNORE


def batch_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, {"multimodal": mean token loss, "text": ...}) for a batch from tune_data.collate."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values") if k in batch}
    hidden = model.model(**inputs, use_cache=False).last_hidden_state[:, :-1]
    labels = batch["labels"][:, 1:]
    scored = labels != IGNORE
    token_loss = F.cross_entropy(model.lm_head(hidden[scored]).float(), labels[scored], reduction="none")
    rows = scored.nonzero()[:, 0]
    is_text = batch["is_text"]
    parts, means = [], {}
    for name, rows_mask, n in (
        ("multimodal", ~is_text[rows], int((~is_text).sum())),
        ("text", is_text[rows], int(is_text.sum())),
    ):
        if n:
            mean = token_loss[rows_mask].mean()
            parts.append(mean * n)
            means[name] = mean.item()
    return torch.stack(parts).sum() / len(is_text), means
