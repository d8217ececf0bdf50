"""Named tensors in safetensors with a typed JSON header under the `qslaw` metadata key.

Every file written here also carries the sha256 of its tensors (names, dtypes, shapes and bytes) in its
header, as `tensors_sha256`, checked on every read: a flipped byte in a resume file (a tune checkpoint, a calibrated
block) is a `DamagedFile`, never silently resumed from. Files written before the checksum read as before.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from qslaw_pipe.errors import QslawError

HEADER_KEY = "qslaw"
CHECKSUM_KEY = "tensors_sha256"


class DamagedFile(QslawError):
    """A tensors file that does not read back as written (truncated, garbled, or not the checksummed content)."""


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], header: dict | None = None) -> None:
    """Write contiguous CPU tensors; `header` (JSON-serialisable) describes their format.
    Atomic: written to a temporary name, then renamed, so a crash never leaves a half file."""
    path = Path(path)
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # one metadata key: safetensors writes several in no fixed order, and the file's bytes must not vary
    meta = {HEADER_KEY: json.dumps({**(header or {}), CHECKSUM_KEY: tensors_sha256(plain)}, sort_keys=True)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(plain, str(tmp), metadata=meta)
    tmp.replace(path)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read back every tensor and the header written by `save_tensors`, checking them against their checksum."""
    fix = "re-run the stage that wrote it (with --force when it is a finished artifact)"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = json.loads(meta.get(HEADER_KEY, "{}"))
    except (SafetensorError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFile(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]})", fix) from e
    digest = header.pop(CHECKSUM_KEY, None)
    if digest is not None and tensors_sha256(tensors) != digest:
        raise DamagedFile(f"{path} is damaged (its tensors do not match the checksum written with them)", fix)
    return tensors, header
