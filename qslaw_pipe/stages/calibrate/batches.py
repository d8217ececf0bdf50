"""Calibration batches: WikiText chunks (`text`) or text chunks each led by an image sample (`hybrid`).

`hybrid` sequences start with one multimodal sample (image tokens through the vision tower and
projector, question, answer) and are filled to `seqlen` with WikiText tokens, so every sequence has
the same length and mixes image and text tokens (the paper's OmniQuant-2 calibration).
"""

from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.data.sample import Sample
from qslaw_pipe.pipeline.data.text import read_text, split_text, token_chunks
from qslaw_pipe.pipeline.model import LoadedModel
from qslaw_pipe.pipeline.prompt import chat_prompt
from qslaw_pipe.stages.calibrate.config import CalibrateConfig


def text_batches(tokenizer, text: str, n: int, seqlen: int) -> list[dict]:
    chunks = token_chunks(tokenizer, text, seqlen, limit=n)
    if len(chunks) < n:
        raise QslawError(
            f"calibration text gives {len(chunks)} chunks of {seqlen} tokens, fewer than --nsamples {n}",
            "lower --nsamples or --seqlen",
        )
    return [{"input_ids": c.unsqueeze(0)} for c in chunks]


def _hybrid_batch(lm: LoadedModel, sample: Sample, filler: torch.Tensor, seqlen: int) -> dict:
    text = chat_prompt(lm.processor, sample.prompt, with_image=True) + sample.target
    enc = lm.processor(images=open_image(sample.image), text=text, return_tensors="pt")
    ids = enc["input_ids"][0]
    if ids.numel() >= seqlen:
        raise QslawError(
            f"a multimodal sample has {ids.numel()} tokens, not fewer than --seqlen {seqlen}",
            "raise --seqlen",
        )
    fill = filler[: seqlen - ids.numel()]
    arch = lm.arch  # the family's image inputs, and its per-token ones continued over the filler (text)
    tokens = {k: torch.cat([enc[k][0], torch.zeros_like(fill)])[None] for k in arch.token_inputs if k in enc}
    images = {k: enc[k] for k in arch.image_inputs if k in enc}
    return {"input_ids": torch.cat([ids, fill]).unsqueeze(0), **images, **tokens}


def hybrid_batches(lm: LoadedModel, text: str, samples: list[Sample], n: int, seqlen: int) -> list[dict]:
    if not lm.multimodal:
        raise QslawError("--calib hybrid needs a multimodal model", "use --calib text for a causal LM")
    fill = text_batches(lm.tokenizer, text, n, seqlen)
    return [_hybrid_batch(lm, s, f["input_ids"][0], seqlen) for s, f in zip(samples[:n], fill, strict=True)]


def calibration_batches(lm, cfg: CalibrateConfig, text_path: Path) -> list[dict]:
    text = split_text(read_text(text_path), "calib")
    if cfg.calib == "text":
        return text_batches(lm.tokenizer, text, cfg.nsamples, cfg.seqlen)
    return hybrid_batches(lm, text, load_easyvqa("train", cfg.seed), cfg.nsamples, cfg.seqlen)
