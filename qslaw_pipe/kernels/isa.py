"""Which CPU kernel path the ai.qslaw library runs here, and what CPU this is (for benchmark tables).

The library picks the widest path this CPU supports (avx512, avx2, generic) when a session builds a kernel;
$QSLAW_CPU_ISA (the ENV name below) forces a narrower one. Like all of kernels/, imports nothing else of the package.
"""

import ctypes
import platform
from pathlib import Path

ENV = "QSLAW_CPU_ISA"
# the /proc/cpuinfo flags the paths are compiled for, and the others tables should mention
FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
)


def _lib(library: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library))
    for fn in (lib.QslawCpuIsa, lib.QslawCpuIsas):
        fn.restype = ctypes.c_char_p
    return lib


def selected_isa(library: Path) -> str:
    """The path a session built now would run ($QSLAW_CPU_ISA honoured; 'unavailable' if it names a bad one)."""
    return _lib(library).QslawCpuIsa().decode()


def supported_isas(library: Path) -> list[str]:
    """Every path this CPU can run, widest first."""
    return _lib(library).QslawCpuIsas().decode().split(",")


def cpu_description() -> dict:
    """CPU model name, core count and the ISA flags of FLAGS this CPU has (from /proc/cpuinfo on Linux)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    fields = dict(
        line.split(":", 1)
        for line in text.splitlines()
        if ":" in line and not line.startswith("power management")
    )
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:  # virtual machines often show a bare brand name: family / model say the core
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return {
        "cpu": name,
        "cpu_flags": [f for f in FLAGS if f in flags],
    }
