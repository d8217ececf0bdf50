"""`export --format compressed-tensors`: the folded model as a W4A16 pack-quantized checkpoint for vLLM and
transformers (checkpoint.py: the writer, and a read-back through compressed-tensors' own decompressor).

This module imports nothing heavy: the exporter registry (exports/__init__.py) reads its Config for --help.
"""

from dataclasses import dataclass
from typing import ClassVar

from qslaw_pipe.errors import QslawError
from qslaw_pipe.lazy import lazy_exports

SCALE_DTYPES = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class Config:
    dtype: str = "fp16"

    FORMAT: ClassVar[str] = "compressed-tensors"
    FLAGS: ClassVar[dict] = {
        "dtype": (
            "compressed-tensors: dtype of the scales and of every unquantized tensor (codes stay exact; fp16 "
            "rounds scales least; vLLM's int4 kernels take fp16 or bf16).",
            SCALE_DTYPES,
        )
    }

    def __post_init__(self):
        if self.dtype not in SCALE_DTYPES:
            raise QslawError(f"invalid --dtype {self.dtype}", f"use one of {', '.join(SCALE_DTYPES)}")

    def deployed(self, device: str) -> "Config":
        """The export to deploy on `device`: this one."""
        return self

    @property
    def stage(self) -> str:
        return f"export-compressed-tensors-{self.dtype}"


def write(fold_dir, out, cfg: Config) -> dict:
    from qslaw_pipe.exports.compressed_tensors.checkpoint import export_compressed_tensors

    return export_compressed_tensors(fold_dir, out, cfg.dtype)


def describe(cfg: Config, metrics: dict, path) -> tuple[str, str]:
    m = metrics
    what = (
        f"{m['layers']} Linears pack-quantized W{m['bits']} g{m['group_size']}, {m['dtype']} scales "
        f"(max relative rounding {m['scale_max_relative_rounding']:.1e}), {m['bytes'] / 2**20:.1f} MiB"
    )
    return what, f"\n  serve: vllm serve {path} --tensor-parallel-size N"


_HEAVY = (
    "export_compressed_tensors",
    "decompressed_state",
    "packed_layer",
    "tied_embeddings",
    "scheme_config",
    "common_group",
)
__getattr__ = lazy_exports(__name__, {name: "checkpoint" for name in _HEAVY})
