"""`qslaw-pipe eval ppl`: held-out WikiText perplexity, full precision vs the calibrated fake-quant model.
`--act-bits 8` also fake-quantizes every quantized Linear's input per token (W4A8-style settings, simulated)."""

import copy
from dataclasses import dataclass
from pathlib import Path

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.artifact import StageResult, identity, read_artifact, run_stage, stage_dir
from qslaw_pipe.pipeline.config import config_to_dict, merge_recipe
from qslaw_pipe.pipeline.data.text import default_text_path, read_text, split_text, token_chunks
from qslaw_pipe.pipeline.device import check_placement, resolve
from qslaw_pipe.pipeline.model import load_model, resolve_model
from qslaw_pipe.pipeline.qparams import apply_fake_quant, load_qparams, quantize_inputs
from qslaw_pipe.stages.evaluate.perplexity import perplexity


@dataclass(frozen=True)
class PplConfig:
    seqlen: int = 512
    windows: int = 32
    batch_size: int = 4
    act_bits: int = 16
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.seqlen < 2 or self.windows < 1 or self.batch_size < 1:
            raise QslawError("invalid --seqlen/--windows/--batch-size", "use positive values (seqlen >= 2)")
        if not 2 <= self.act_bits <= 16:
            raise QslawError(
                f"invalid --act-bits {self.act_bits}", "use 2 to 16 (16: activations not quantized)"
            )


def evaluate_ppl(model_dir: Path, run_dir: Path, text_path: Path, cfg: PplConfig) -> dict:
    """FP and fake-quant perplexity on the held-out half, first `windows` non-overlapping windows.
    Fake quantization is computed in fp32 on the CPU; each model then computes on --device / --dtype."""
    calib = read_artifact(run_dir, "calibrate", model_sha=identity(model_dir))
    compute = resolve(cfg.device, cfg.dtype)
    lm = load_model(model_dir)
    windows = token_chunks(lm.tokenizer, split_text(read_text(text_path), "eval"), cfg.seqlen, cfg.windows)
    qparams = load_qparams(calib)
    quant = apply_fake_quant(copy.deepcopy(lm.model), qparams)
    if cfg.act_bits < 16:
        quantize_inputs(quant, sorted(qparams), cfg.act_bits)
    fp = perplexity(lm.model.to(compute.device, compute.dtype), windows, cfg.batch_size, "fp", compute)
    del lm
    q = perplexity(quant.to(compute.device, compute.dtype), windows, cfg.batch_size, "quantized", compute)
    c = calib.config
    return {
        "fp": fp,
        "quantized": q,
        "windows": len(windows),
        "seqlen": cfg.seqlen,
        "split": "eval (second half)",
        "quantizer": f"{c['method']} W{c['bits']}"
        + (f"A{cfg.act_bits}" if cfg.act_bits < 16 else "")
        + f" g{c['group_size']}",
        **compute.record(),
    }


def run_ppl(
    cfg: PplConfig, run_dir: Path, model_dir: Path, text_path: Path, force: bool = False
) -> StageResult:
    inputs = {"model": model_dir, "text": text_path, "calibrate": stage_dir(run_dir, "calibrate")}
    if not (inputs["calibrate"] / "manifest.json").is_file():
        read_artifact(run_dir, "calibrate")  # raises the one-line error naming the missing file
    return run_stage(
        run_dir,
        "eval-ppl",
        config_to_dict(cfg),
        inputs,
        lambda _out, _r: evaluate_ppl(model_dir, run_dir, text_path, cfg),
        force=force,
    )


@click.command("ppl")
@cli.run_dir_option
@cli.model_option
@cli.field_option(PplConfig, "seqlen", "Tokens per window.")
@cli.field_option(PplConfig, "windows", "Held-out windows scored (from the start of the second half).")
@cli.field_option(PplConfig, "batch_size", "Windows per forward pass.")
@cli.field_option(
    PplConfig, "act_bits", "Simulated activation bits of the quantized Linears' inputs, per token (16: off)."
)
@cli.compute_options(PplConfig)
@cli.text_option
@cli.stage_options
def command(run_dir, model, text, recipe, force, as_json, **flags) -> None:
    """Perplexity of the full-precision LM and of RUN_DIR/calibrate's fake-quant LM, side by side."""
    cli.quiet_libraries()
    cfg = merge_recipe(PplConfig, recipe, flags)
    result = run_ppl(cfg, run_dir, resolve_model(model), text or default_text_path(), force)
    m = result.artifact.metrics
    human = (
        f"perplexity, held-out {m['split']}, {m['windows']} x {m['seqlen']} tokens\n"
        f"  {'full precision':<24}{m['fp']:10.2f}\n  {m['quantizer']:<24}{m['quantized']:10.2f}"
    )
    cli.emit({"artifact": str(result.artifact.path), **m}, as_json, human)
