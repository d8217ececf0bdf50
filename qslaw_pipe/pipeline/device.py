"""Where a stage computes and in which dtype: `--device auto|cpu|cuda|cuda:N`, `--dtype auto|fp32|bf16|fp16`.

auto takes CUDA when there is one; the compute dtype is bf16 on CUDA and fp32 on the CPU unless --dtype
says otherwise. Artifacts are device-independent: tensors are saved from the CPU whatever computed them,
and each manifest records the device and dtype that were used.
"""

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.placement import check_device, check_dtype

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Compute:
    """The resolved device and compute dtype of one stage run."""

    device: torch.device
    dtype: torch.dtype

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager:
        """Mixed precision for the forward pass when the compute dtype is below fp32 (off on fp32)."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    def record(self) -> dict:
        """What a manifest stores: device (with the GPU's name) and dtype."""
        name = torch.cuda.get_device_name(self.device) if self.cuda else "cpu"
        return {
            "device": str(self.device),
            "device_name": name,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    def peak_memory_mb(self) -> float | None:
        """Peak GPU memory allocated by torch on this device so far (None on the CPU)."""
        return round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1) if self.cuda else None


def resolve(device: str = "auto", dtype: str = "auto") -> Compute:
    """The Compute for --device / --dtype; asking for CUDA where there is none is a one-line error."""
    check_device(device)
    check_dtype(dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise QslawError(
                f"--device {device}: this machine has no CUDA device", "use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise QslawError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)", "use cuda:0 or auto"
            )
    if dtype == "auto":
        return Compute(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
    return Compute(dev, DTYPES[dtype])


def to_device(batch: dict, device: torch.device) -> dict:
    """Every tensor of a batch (and of the dicts in it) on `device` (non-blocking from pinned memory)."""
    return {
        k: v.to(device, non_blocking=True)
        if torch.is_tensor(v)
        else to_device(v, device)
        if isinstance(v, dict) and all(isinstance(x, str) for x in v)
        else v
        for k, v in batch.items()
    }
