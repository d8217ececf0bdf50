"""Tuning batches: multimodal instruction samples and WikiText chunks, drawn per step.

Multimodal warmup (QSLAW sec. 3.3): steps < `warmup_steps` draw only multimodal samples; later
batches mix multimodal and text samples at `mm:text`. Which samples a step gets is a pure function
of (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.

Labels: a multimodal sample is scored on its answer tokens (answer + end-of-turn token) only, a text
sample on all its tokens; unscored positions hold -100.
"""

import random
from dataclasses import dataclass, field
from functools import lru_cache

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.arch import Arch
from qslaw_pipe.pipeline.arch.base import collate_images
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.data.sample import Sample
from qslaw_pipe.pipeline.prompt import chat_prompt

IGNORE = -100


def modalities(step: int, batch_size: int, warmup_steps: int, mix: tuple[int, int]) -> list[str]:
    """The modality of each slot of step `step`'s batch."""
    mm, text = mix
    if mm == 0:  # text alone (tune --data text)
        return ["text"] * batch_size
    n_text = 0 if step < warmup_steps else round(batch_size * text / (mm + text))
    n_text = min(n_text, batch_size - 1)
    return ["multimodal"] * (batch_size - n_text) + ["text"] * n_text


@dataclass(frozen=True)
class Example:
    """input_ids, labels [L] int64 (labels IGNORE where unscored); images: the image inputs of the model's
    family (pixel_values and the like, one row per image or tile; empty for text); tokens: its per-token
    inputs [L] (Qwen2-VL's mm_token_type_ids), 0 past the prompt."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    modality: str
    images: dict = field(default_factory=dict)
    tokens: dict = field(default_factory=dict)


def mm_example(processor, arch: Arch, sample: Sample) -> Example:
    tok = processor.tokenizer
    prompt = chat_prompt(processor, sample.prompt, with_image=True)
    enc = processor(images=open_image(sample.image), text=prompt, return_tensors="pt")
    answer = tok(sample.target + (tok.eos_token or ""), add_special_tokens=False, return_tensors="pt")[
        "input_ids"
    ][0]
    ids = torch.cat([enc["input_ids"][0], answer])
    labels = torch.cat([torch.full_like(enc["input_ids"][0], IGNORE), answer])
    tokens = {k: torch.cat([enc[k][0], torch.zeros_like(answer)]) for k in arch.token_inputs if k in enc}
    return Example(ids, labels, "multimodal", {k: enc[k] for k in arch.image_inputs if k in enc}, tokens)


def text_example(chunk: torch.Tensor) -> Example:
    return Example(chunk, chunk.clone(), "text")


class StepSampler:
    """Draws step `t`'s examples from the multimodal pool and the text chunks."""

    def __init__(
        self,
        processor,
        arch: Arch,
        samples: list[Sample],
        chunks: list[torch.Tensor],
        batch_size: int,
        warmup_steps: int,
        mix: tuple[int, int],
        seed: int,
    ):
        if not samples and mix[0]:
            raise QslawError("no multimodal training samples", "check --data")
        if mix[1] and len(chunks) == 0:
            raise QslawError(
                "no text chunks for the text part of --mix-ratio", "use a longer --text or --mix-ratio 1:0"
            )
        self.samples, self.chunks, self.batch_size = samples, chunks, batch_size
        self.warmup_steps, self.mix, self.seed = warmup_steps, mix, seed
        self._mm = lru_cache(maxsize=4096)(lambda i: mm_example(processor, arch, samples[i]))

    def examples(self, step: int) -> list[Example]:
        rng = random.Random(self.seed * 1_000_003 + step)
        out = []
        for modality in modalities(step, self.batch_size, self.warmup_steps, self.mix):
            if modality == "multimodal":
                out.append(self._mm(rng.randrange(len(self.samples))))
            else:
                out.append(text_example(self.chunks[rng.randrange(len(self.chunks))]))
        return out


def modality_totals(examples: list[Example]) -> dict[str, tuple[int, int]]:
    """{modality: (samples, scored tokens)} of a (global) batch: what the batch loss normalizes by."""
    totals: dict[str, tuple[int, int]] = {}
    for e in examples:
        n, tokens = totals.get(e.modality, (0, 0))
        totals[e.modality] = (n + 1, tokens + int((e.labels[1:] != IGNORE).sum()))
    return totals


def collate(examples: list[Example], pad_id: int, whole: list[Example] | None = None) -> dict:
    """Right-padded batch: input_ids, attention_mask, labels [B, L]; `inputs`: the family's image and
    per-token inputs (empty for text); `totals` of the whole global batch `whole` that `examples` are one
    rank's share of (default: themselves)."""
    length = max(e.input_ids.numel() for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    token_keys = sorted({k for e in examples for k in e.tokens})
    tokens = {k: torch.zeros_like(ids) for k in token_keys}
    for i, e in enumerate(examples):
        n = e.input_ids.numel()
        ids[i, :n], labels[i, :n], mask[i, :n] = e.input_ids, e.labels, 1
        for k in token_keys:
            tokens[k][i, :n] = e.tokens.get(k, torch.zeros(n, dtype=torch.long))
    images = [e.images for e in examples if e.images]
    keys = tuple(dict.fromkeys(k for im in images for k in im))
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "is_text": torch.tensor([e.modality == "text" for e in examples], dtype=torch.bool),
        "totals": modality_totals(examples if whole is None else whole),
        "inputs": {**collate_images(images, keys), **(tokens if images else {})},
    }
