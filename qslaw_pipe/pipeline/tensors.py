"""Named tensors in safetensors with a typed JSON header under the `qslaw` metadata key."""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

HEADER_KEY = "qslaw"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], header: dict | None = None) -> None:
    """Write contiguous CPU tensors; `header` (JSON-serialisable) describes their format.
    Atomic: written to a temporary name, then renamed, so a crash never leaves a half file."""
    path = Path(path)
    meta = {HEADER_KEY: json.dumps(header or {}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read back every tensor and the header written by `save_tensors`."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, json.loads(meta.get(HEADER_KEY, "{}"))
