"""Facts about the process and its libraries that every manifest records."""

import importlib.metadata
import platform
import resource
from pathlib import Path

_LIBRARIES = ("torch", "transformers", "safetensors", "torchao", "onnx", "onnxruntime", "qslaw-pipe")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")


def machine_name(device: str = "auto") -> str:
    """What a benchmark table names as its machine: the GPU, or the CPU model, threads and SIMD flags."""
    import torch

    from qslaw_pipe.pipeline.device import resolve

    compute = resolve(device)
    if compute.cuda:
        return torch.cuda.get_device_name(compute.device)
    cpuinfo = Path("/proc/cpuinfo")
    info = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.processor()
    )
    flags = set(next((ln.split(":", 1)[1].split() for ln in info if ln.startswith("flags")), []))
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "no AVX2"
    return f"CPU: {model}, {torch.get_num_threads()} threads, {isa}"
