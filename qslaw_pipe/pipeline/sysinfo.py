"""Facts about the process and its libraries that every manifest records."""

import importlib.metadata
import platform
import resource

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
