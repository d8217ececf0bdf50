"""`export --format onnx`: the fold artifact as onnxruntime graphs (vision + projector, embeddings, decoder
with KV cache, and text/ for optimum), every quantized Linear as an int-k op from our codes.

export.py    the three graphs and text/ (traced; the decoder built node by node where the family allows)
vision.py    vision.onnx per model family, and the runtime's placement of its features
decoder.py   decoder.onnx built from fused onnxruntime ops (GroupQueryAttention, SkipSimplifiedLayerNorm)
linear.py    a built decoder's (fused) Linears as int-k ops
int4_ops.py  the one table of int-k ops (MatMulNBits, QDQ, ai.qslaw) every caller uses
graphs.py    traceable wrappers of the embeddings and decoder
builder.py   a small graph builder with the one UINT4 packer
retype.py    UINT4 retyping of traced QDQ graphs
runtime.py   OrtVlm: runs an export in onnxruntime

This module imports nothing heavy: the exporter registry (exports/__init__.py) reads its Config for --help.
Its name lists mirror int4_ops.INT4_OPS and decoder.LM_HEADS / PRECISIONS (tests/test_layout.py keeps them equal).
"""

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from qslaw_pipe.errors import QslawError

INT4_OP_NAMES = ("matmulnbits", "qdq", "custom")
OPS = (*INT4_OP_NAMES, "fp32")
DECODERS = ("built", "traced")
LM_HEAD_NAMES = ("folded", "int8", "int8-g32", "int4")
PRECISION_NAMES = ("fp32", "fp16")


@dataclass(frozen=True)
class Config:
    """accuracy_level: MatMulNBits' compute type (0 = fp32 activations, 4 = int8 activations).
    decoder: built (fused onnxruntime ops, Llama-family models; others fall back to traced) or traced.
    lm_head: folded (as in the fold artifact) or int8 / int8-g32 / int4 (round-to-nearest at export, built decoder).
    precision: the decoder's activations and KV cache (fp16: for the CUDA EP; fp32 logits either way)."""

    int4_op: str = "matmulnbits"
    accuracy_level: int = 0
    decoder: str = "built"
    lm_head: str = "folded"
    precision: str = "fp32"

    FORMAT: ClassVar[str] = "onnx"
    EARLIER: ClassVar[dict] = {"precision": "fp32"}  # what artifacts written before a field had
    FLAGS: ClassVar[dict] = {
        "int4_op": (
            "onnx: matmulnbits: onnxruntime's com.microsoft op; qdq: standard UINT4 DequantizeLinear + MatMul; "
            "custom: our ai.qslaw op (build kernels/ first); fp32: dequantized fp32 MatMul (a baseline, no int4).",
            OPS,
        ),
        "accuracy_level": (
            "onnx: MatMulNBits compute: 0 exact fp32, 4 int8 activations (faster, approximate).",
            None,
        ),
        "decoder": (
            "onnx: built: decoder.onnx assembled from fused onnxruntime ops (GroupQueryAttention, "
            "SkipSimplifiedLayerNormalization; Llama, Mistral and Qwen2 decoders, others fall back to traced); "
            "traced: torch.onnx.export of the transformers modules.",
            DECODERS,
        ),
        "lm_head": (
            "onnx: folded: lm_head as in the fold artifact (fp32 unless calibrated); int8 / int8-g32 / int4: "
            "round-to-nearest codes at export in groups of 128 / 32 / 32, for fewer bytes read per token "
            "(approximate logits; int8-g32 is the bounded choice, see docs/results/inference.md for each one's "
            "logit error); built decoder only.",
            LM_HEAD_NAMES,
        ),
        "precision": (
            "onnx: the type of the decoder's activations, norms, attention, KV cache and scales. fp16 is for "
            "onnxruntime's CUDA EP, whose attention kernel is fp16/bf16; int4 codes stay exact, logits stay fp32; "
            "needs the built decoder and --int4-op matmulnbits or qdq (our custom op reads fp32 activations).",
            PRECISION_NAMES,
        ),
    }

    def __post_init__(self):
        for name, allowed in (
            ("int4_op", OPS),
            ("decoder", DECODERS),
            ("lm_head", LM_HEAD_NAMES),
            ("precision", PRECISION_NAMES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise QslawError(
                    f"invalid --{name.replace('_', '-')} {value}", f"use one of {', '.join(allowed)}"
                )
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise QslawError(f"invalid --accuracy-level {self.accuracy_level}", "use 0 (fp32) to 4 (int8)")

    def deployed(self, device: str) -> "Config":
        """The export to deploy on `device`: where onnxruntime runs the decoder on a GPU (its CUDA EP), the
        fp16 decoder for the ops that read fp16 activations, unless another precision than fp32 was chosen."""
        from qslaw_pipe.exports.onnx.runtime import providers

        on_gpu = providers(device.split(":")[0])[0] == "CUDAExecutionProvider"
        if on_gpu and self.precision == "fp32" and self.int4_op in ("matmulnbits", "qdq"):
            return dataclasses.replace(self, precision="fp16")
        return self

    @property
    def stage(self) -> str:
        level = f"-acc{self.accuracy_level}" if self.accuracy_level else ""
        traced = "-traced" if self.decoder == "traced" else ""
        head = "" if self.lm_head == "folded" else f"-head{self.lm_head[3:]}"
        half = "" if self.precision == "fp32" else f"-{self.precision}"
        return f"export-onnx-{self.int4_op}{level}{traced}{head}{half}"


def write(fold_dir, out, cfg: Config) -> dict:
    from qslaw_pipe.exports.onnx.export import export_onnx

    return export_onnx(
        fold_dir, out, cfg.int4_op, cfg.accuracy_level, cfg.decoder, cfg.lm_head, cfg.precision
    )


def describe(cfg: Config, metrics: dict, path) -> tuple[str, str]:
    m = metrics
    what = f"{cfg.int4_op}, {m['decoder']} decoder of {m['layers']} layers, lm_head {m['lm_head']}"
    sizes = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in m["bytes"].items())
    return what, f"\n  {sizes}\n  try: qslaw-pipe generate --onnx {path} --image IMG --prompt TEXT"
