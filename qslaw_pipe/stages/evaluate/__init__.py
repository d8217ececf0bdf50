"""Evaluation: `eval ppl`, `eval mcq` and `generate`.

ppl.py          held-out WikiText perplexity, full precision vs the calibrated fake-quant LM
perplexity.py   perplexity over non-overlapping windows
mcq.py          multiple-choice accuracy of tuned runs (PyTorch or onnxruntime), side by side
answers.py      batched greedy answers of a PyTorch VLM
scoring.py      the answer letter parsed from an output; accuracy overall and per category
tuned_model.py  a finished tune run as a plain PyTorch model, from the artifacts alone
generate.py     `qslaw-pipe generate`: one answer about an image (PyTorch dir or ONNX export)
"""

import click

from qslaw_pipe.stages.evaluate import generate, mcq, ppl


@click.group("eval")
def group() -> None:
    """Evaluate a run: `ppl` (held-out WikiText perplexity), `mcq` (multiple-choice accuracy)."""


group.add_command(ppl.command)
group.add_command(mcq.command)

__all__ = ["generate", "group", "mcq", "ppl"]
