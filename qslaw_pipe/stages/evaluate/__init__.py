"""Evaluation: `eval ppl`, `eval mcq` and `generate`.

ppl.py          held-out WikiText perplexity, full precision vs the calibrated fake-quant LM
perplexity.py   perplexity over non-overlapping windows
mcq.py          multiple-choice accuracy of tuned runs (PyTorch or onnxruntime), side by side
answers.py      batched greedy answers of a PyTorch VLM
scoring.py      the answer letter parsed from an output; accuracy overall and per category
tuned_model.py  a finished tune run as a plain PyTorch model, from the artifacts alone
generate.py     one answer about an image from a PyTorch model
config.py       GenerateConfig, McqConfig, PplConfig
command.py      `qslaw-pipe generate`, `eval mcq`, `eval ppl` (one answer from a PyTorch dir or an ONNX export)
"""

from qslaw_pipe.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__, {"generate": "generate", "mcq": "mcq", "ppl": "ppl", "group": "command", "config": "config"}
)
__all__ = ["generate", "group", "mcq", "ppl"]
