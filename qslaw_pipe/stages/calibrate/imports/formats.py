"""The checkpoint formats we import: one row each, chosen by the `quant_method` of the checkpoint's
quantization_config. A format module has `read(tensors, qconfig) -> Imported` (checkpoint.py). A new format
is one file here and one row below."""

from dataclasses import dataclass

from qslaw_pipe.errors import QslawError
from qslaw_pipe.registry import Entry, table


@dataclass(frozen=True)
class Importer(Entry):
    """quant_methods: the quantization_config `quant_method` values this format is written under."""

    quant_methods: tuple[str, ...] = ()


_HERE = __name__.rsplit(".", 1)[0]
IMPORTERS: dict[str, Importer] = table(
    Importer(
        "gptq",
        "GPTQ (auto-gptq, GPTQModel, optimum): 2, 3, 4 or 8 bits, without an act-order permutation",
        f"{_HERE}.gptq",
        ("gptq",),
    ),
    Importer("awq", "AWQ, GEMM packing, 4 bits with zero points", f"{_HERE}.awq", ("awq",)),
    Importer(
        "auto-round",
        "AutoRound's own format (auto_round, auto_round:auto_gptq, auto_round:auto_awq packings)",
        f"{_HERE}.auto_round",
        ("auto-round", "intel/auto-round"),
    ),
    Importer(
        "compressed-tensors",
        "compressed-tensors pack-quantized int weights, group or channel (llm-compressor, our export)",
        f"{_HERE}.compressed_tensors",
        ("compressed-tensors",),
    ),
)


def importer_for(qconfig: dict) -> Importer:
    method = str(qconfig.get("quant_method", "")).lower()
    for row in IMPORTERS.values():
        if method in row.quant_methods:
            return row
    known = ", ".join(m for row in IMPORTERS.values() for m in row.quant_methods)
    raise QslawError(
        f"the checkpoint's quant_method {method or '(none)'!r} is not one we import",
        f"use a checkpoint quantized as one of: {known}",
    )
