"""Exporters: converters from the one canonical packed format (the fold artifact, pipeline/folded.py) to each
deployment target, one row each in EXPORTERS and one module (or package) each, none importing another:

    onnx/                  onnxruntime graphs with int-k ops (MatMulNBits, QDQ, our ai.qslaw op)
    torchao/               a Hugging Face directory of torchao int4 tensors
    compressed_tensors/    a W4A16 pack-quantized checkpoint for vLLM

An exporter module imports nothing heavy at its top and has `Config` (a frozen dataclass of its own
settings: FORMAT, FLAGS {field: (help, choices)} for the CLI, optional EARLIER {field: the value artifacts
written before that field had}, a `stage` property naming its artifact directory, and `deployed(device)`:
the Config to deploy on a device, e.g. ONNX's fp16 decoder where the CUDA EP runs it), `write(fold_dir, out,
cfg) -> metrics` and `describe(cfg, metrics, path) -> (what, details)` for the CLI's report. A new target is
one module here and one row below.
"""

from dataclasses import dataclass

from qslaw_pipe.registry import Entry, lookup, table


@dataclass(frozen=True)
class Exporter(Entry):
    """An export target: the row's module is an exporter package (see above)."""


EXPORTERS: dict[str, Exporter] = table(
    Exporter(
        "onnx",
        "three onnxruntime graphs (vision + projector, embeddings, decoder with KV cache) and text/ for optimum",
        f"{__name__}.onnx",
    ),
    Exporter(
        "torchao",
        "a Hugging Face directory with torchao int4 tensor subclasses (from_pretrained loads it)",
        f"{__name__}.torchao",
    ),
    Exporter(
        "compressed-tensors",
        "a W4A16 pack-quantized Hugging Face checkpoint (vllm serve, or from_pretrained with compressed-tensors)",
        f"{__name__}.compressed_tensors",
    ),
)


def exporter(name: str) -> Exporter:
    return lookup(EXPORTERS, name, "--format")
