"""Plain text (WikiText raw) as fixed-length token chunks.

Split: the file is cut at the first newline after half of its characters; the first half is the
calibration / training part, the second half is held out for perplexity. Every reported perplexity
says which part it used.
"""

from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError

SPLITS = ("calib", "eval")


def read_text(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise QslawError(
            f"text corpus {path} not found", "pass --text PATH to a raw text file (e.g. wiki.test.raw)"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise QslawError(f"text corpus {path} is not UTF-8 text", "pass --text a raw text file") from e


def split_text(text: str, split: str) -> str:
    """'calib': text up to the first newline after the midpoint; 'eval': the rest."""
    if split not in SPLITS:
        raise QslawError(f"unknown text split '{split}'", f"use one of {', '.join(SPLITS)}")
    cut = text.find("\n", len(text) // 2)
    cut = len(text) if cut < 0 else cut + 1
    return text[:cut] if split == "calib" else text[cut:]


def token_chunks(tokenizer, text: str, seqlen: int, limit: int | None = None) -> torch.Tensor:
    """Non-overlapping `seqlen`-token windows of `text` (no BOS), as int64 [n, seqlen]."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    n = ids.numel() // seqlen
    if limit is not None:
        n = min(n, limit)
    if n == 0:
        raise QslawError(
            f"text has {ids.numel()} tokens, fewer than one {seqlen}-token chunk", "use a smaller --seqlen"
        )
    return ids[: n * seqlen].view(n, seqlen).clone()
