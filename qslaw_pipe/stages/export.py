"""Stage `export`: deployable models from the fold artifact (exports/ converters; codes never re-quantized).

`--format onnx` writes R/export-onnx-<op>/: vision.onnx, embed.onnx, decoder.onnx (KV cache), every
quantized Linear as the chosen int4 op, the tokenizer / processor files and qslaw_onnx.json; run it
with `qslaw-pipe generate --onnx DIR` or exports/onnx/runtime.OrtVlm. `--format torchao` writes a Hugging
Face directory with torchao int4 tensors; `--format compressed-tensors` a W4A16 pack-quantized checkpoint
that vLLM serves and transformers loads (exports/compressed_tensors.py).
"""

from dataclasses import dataclass
from pathlib import Path

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports.onnx.decoder import LM_HEADS, PRECISIONS
from qslaw_pipe.exports.onnx.int4_ops import OPS as INT4_OPS
from qslaw_pipe.pipeline.artifact import StageResult, read_artifact, run_stage
from qslaw_pipe.pipeline.config import config_to_dict, merge_recipe

FORMATS = ("onnx", "torchao", "compressed-tensors")
SCALE_DTYPES = ("fp16", "bf16", "fp32")
OPS = (*INT4_OPS, "fp32")
DECODERS = ("built", "traced")


@dataclass(frozen=True)
class ExportConfig:
    """accuracy_level: MatMulNBits' compute type (0 = fp32 activations, 4 = int8 activations).
    decoder: built (fused onnxruntime ops, Llama-family models; others fall back to traced) or traced.
    lm_head: folded (as in the fold artifact) or int8 / int8-g32 / int4 (round-to-nearest at export, built decoder).
    dtype: compressed-tensors' scales and unquantized tensors (fp16 or bf16 for vLLM).
    precision: the ONNX decoder's activations and KV cache (fp16: for the CUDA EP; fp32 logits either way)."""

    format: str = "onnx"
    int4_op: str = "matmulnbits"
    accuracy_level: int = 0
    decoder: str = "built"
    lm_head: str = "folded"
    dtype: str = "fp16"
    precision: str = "fp32"

    def __post_init__(self):
        if self.format not in FORMATS:
            raise QslawError(f"invalid --format {self.format}", f"use one of {', '.join(FORMATS)}")
        if self.int4_op not in OPS:
            raise QslawError(f"invalid --int4-op {self.int4_op}", f"use one of {', '.join(OPS)}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise QslawError(f"invalid --accuracy-level {self.accuracy_level}", "use 0 (fp32) to 4 (int8)")
        if self.lm_head not in LM_HEADS:
            raise QslawError(f"invalid --lm-head {self.lm_head}", f"use one of {', '.join(LM_HEADS)}")
        if self.dtype not in SCALE_DTYPES:
            raise QslawError(f"invalid --dtype {self.dtype}", f"use one of {', '.join(SCALE_DTYPES)}")
        if self.decoder not in DECODERS:
            raise QslawError(f"invalid --decoder {self.decoder}", f"use one of {', '.join(DECODERS)}")
        if self.precision not in PRECISIONS:
            raise QslawError(f"invalid --precision {self.precision}", f"use one of {', '.join(PRECISIONS)}")
        if self.precision != "fp32" and self.format != "onnx":
            raise QslawError(
                f"--precision {self.precision} applies to --format onnx",
                "drop --precision, or export --format onnx",
            )

    @property
    def stage(self) -> str:
        if self.format == "torchao":
            return "export-torchao"
        if self.format == "compressed-tensors":
            return f"export-compressed-tensors-{self.dtype}"
        level = f"-acc{self.accuracy_level}" if self.accuracy_level else ""
        traced = "-traced" if self.decoder == "traced" else ""
        head = "" if self.lm_head == "folded" else f"-head{self.lm_head[3:]}"
        half = "" if self.precision == "fp32" else f"-{self.precision}"
        return f"export-{self.format}-{self.int4_op}{level}{traced}{head}{half}"


def run(cfg: ExportConfig, run_dir: Path, force: bool = False) -> StageResult:
    fold = read_artifact(run_dir, "fold")
    if cfg.format == "torchao":
        from qslaw_pipe.exports.torchao import export_torchao

        work, config = (lambda out, _r: export_torchao(fold.path, out)), {"format": cfg.format}
    elif cfg.format == "compressed-tensors":
        from qslaw_pipe.exports.compressed_tensors import export_compressed_tensors

        work = lambda out, _r: export_compressed_tensors(fold.path, out, cfg.dtype)  # noqa: E731
        config = {"format": cfg.format, "dtype": cfg.dtype}
    else:
        from qslaw_pipe.exports.onnx.export import export_onnx

        def work(out, _r):
            return export_onnx(
                fold.path, out, cfg.int4_op, cfg.accuracy_level, cfg.decoder, cfg.lm_head, cfg.precision
            )

        config = config_to_dict(cfg)
    return run_stage(run_dir, cfg.stage, config, {"fold": fold.path}, work, force=force, model_input=None)


C = ExportConfig


@click.command("export")
@cli.run_dir_option
@cli.field_option(
    C,
    "format",
    "onnx: three onnxruntime graphs (vision + projector, embeddings, decoder with KV cache) and text/ for "
    "optimum; torchao: a Hugging Face directory with torchao int4 tensor subclasses (from_pretrained loads it); "
    "compressed-tensors: W4A16 pack-quantized Hugging Face checkpoint (vllm serve, or from_pretrained with "
    "the compressed-tensors package).",
    type=click.Choice(FORMATS),
)
@cli.field_option(
    C,
    "int4_op",
    "matmulnbits: onnxruntime's com.microsoft op; qdq: standard UINT4 DequantizeLinear + MatMul; "
    "custom: our ai.qslaw op (build kernels/ first); fp32: dequantized fp32 MatMul (a baseline, no int4).",
    type=click.Choice(OPS),
)
@cli.field_option(
    C, "accuracy_level", "MatMulNBits compute: 0 exact fp32, 4 int8 activations (faster, approximate)."
)
@cli.field_option(
    C,
    "decoder",
    "built: decoder.onnx assembled from fused onnxruntime ops (GroupQueryAttention, "
    "SkipSimplifiedLayerNormalization; Llama-family models, others fall back to traced); "
    "traced: torch.onnx.export of the transformers modules.",
    type=click.Choice(DECODERS),
)
@cli.field_option(
    C,
    "lm_head",
    "folded: lm_head as in the fold artifact (fp32 unless calibrated); int8 / int8-g32 / int4: round-to-nearest "
    "codes at export in groups of 128 / 32 / 32, for fewer bytes read per token (approximate logits; int8-g32 "
    "is the bounded choice, see docs/results/inference.md for each one's logit error); built decoder only.",
    type=click.Choice(LM_HEADS),
)
@cli.field_option(
    C,
    "dtype",
    "compressed-tensors: dtype of the scales and of every unquantized tensor (codes stay exact; fp16 rounds "
    "scales least; vLLM's int4 kernels take fp16 or bf16).",
    type=click.Choice(SCALE_DTYPES),
)
@cli.field_option(
    C,
    "precision",
    "onnx: the type of the decoder's activations, norms, attention, KV cache and scales. fp16 is for "
    "onnxruntime's CUDA EP, whose attention kernel is fp16/bf16; int4 codes stay exact, logits stay fp32; needs "
    "the built decoder and --int4-op matmulnbits or qdq (our custom op reads fp32 activations).",
    type=click.Choice(PRECISIONS),
)
@cli.stage_options
def command(run_dir, recipe, force, as_json, **flags) -> None:
    """Export RUN_DIR/fold to a deployable model -> RUN_DIR/export-<format>-<op>/."""
    cli.quiet_libraries()
    cfg = merge_recipe(ExportConfig, recipe, flags)
    result = run(cfg, run_dir, force)
    m = result.artifact.metrics
    if cfg.format == "torchao":
        what = f"{m['layers']} Linears as {m['tensor_subclass']}, block {m['block_size']}, {m['bytes'] / 2**20:.1f} MiB"
        details = "\n  load: qslaw_pipe.exports.torchao.load_torchao(path)  (CPU int4 packing at load time)"
    elif cfg.format == "compressed-tensors":
        what = (
            f"{m['layers']} Linears pack-quantized W{m['bits']} g{m['group_size']}, {m['dtype']} scales "
            f"(max relative rounding {m['scale_max_relative_rounding']:.1e}), {m['bytes'] / 2**20:.1f} MiB"
        )
        details = f"\n  serve: vllm serve {result.artifact.path} --tensor-parallel-size N"
    else:
        what = f"{cfg.int4_op}, {m['decoder']} decoder of {m['layers']} layers, lm_head {m['lm_head']}"
        sizes = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in m["bytes"].items())
        details = (
            f"\n  {sizes}\n  try: qslaw-pipe generate --onnx {result.artifact.path} --image IMG --prompt TEXT"
        )
    cli.report(result, as_json, what, details)
