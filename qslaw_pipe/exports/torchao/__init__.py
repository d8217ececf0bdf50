"""`export --format torchao`: a Hugging Face directory whose quantized Linears hold torchao int4 tensors built
from the fold artifact's codes, and the loader that packs them for the device's kernel.

tensors.py  the writer (IntxUnpackedToInt8Tensor from our codes) and load_torchao (CPU Int4OpaqueTensor,
            CUDA tinygemm tile layout), packed at load, never stored

This module imports nothing heavy: the exporter registry (exports/__init__.py) reads its Config for --help.
"""

from dataclasses import dataclass
from typing import ClassVar

from qslaw_pipe.lazy import lazy_exports


@dataclass(frozen=True)
class Config:
    """torchao's export has no settings of its own."""

    FORMAT: ClassVar[str] = "torchao"
    FLAGS: ClassVar[dict] = {}

    def deployed(self, device: str) -> "Config":
        """The export to deploy on `device`: this one."""
        return self

    @property
    def stage(self) -> str:
        return "export-torchao"


def write(fold_dir, out, cfg: Config) -> dict:
    from qslaw_pipe.exports.torchao.tensors import export_torchao

    return export_torchao(fold_dir, out)


def describe(cfg: Config, metrics: dict, path) -> tuple[str, str]:
    m = metrics
    what = f"{m['layers']} Linears as {m['tensor_subclass']}, block {m['block_size']}, {m['bytes'] / 2**20:.1f} MiB"
    return what, "\n  load: qslaw_pipe.exports.torchao.load_torchao(path)  (CPU int4 packing at load time)"


_HEAVY = ("intx_weight", "export_torchao", "to_opaque", "to_tile_packed", "load_torchao")
__getattr__ = lazy_exports(__name__, {name: "tensors" for name in _HEAVY})
