"""`--device auto|cpu|cuda|cuda:N` and `--dtype auto|fp32|bf16|fp16` checked without torch (configs and
--help import this; pipeline/device.py resolves them on the hardware)."""

from qslaw_pipe.errors import QslawError

DEVICES_HELP = "auto (CUDA when there is one), cpu, cuda or cuda:N"
DTYPE_NAMES = ("fp32", "bf16", "fp16")


def check_device(spec: str) -> None:
    """Validate a --device value without touching the hardware."""
    base, colon, index = spec.partition(":")
    if base not in ("auto", "cpu", "cuda") or (colon and (base != "cuda" or not index.isdigit())):
        raise QslawError(f"invalid --device {spec}", f"use {DEVICES_HELP}")


def check_dtype(spec: str) -> None:
    if spec != "auto" and spec not in DTYPE_NAMES:
        raise QslawError(f"invalid --dtype {spec}", f"use auto or one of {', '.join(DTYPE_NAMES)}")


def check_placement(device: str, dtype: str) -> None:
    """Validate a config's --device and --dtype."""
    check_device(device)
    check_dtype(dtype)
