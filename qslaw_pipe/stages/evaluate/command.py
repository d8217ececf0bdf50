"""The evaluation commands: `qslaw-pipe generate`, `qslaw-pipe eval mcq`, `qslaw-pipe eval ppl` (their work is
imported when they run: --help imports nothing heavy)."""

from pathlib import Path

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.paths import default_text_path, resolve_model
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.stages.evaluate.config import GenerateConfig, McqConfig, PplConfig


@click.command("generate")
@cli.model_option
@cli.onnx_dir_option
@click.option(
    "--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Image file (PNG/JPEG)."
)
@click.option("--prompt", required=True, help="The question or instruction.")
@cli.field_option(GenerateConfig, "max_new_tokens", "Tokens generated at most (an end token stops earlier).")
@cli.field_option(GenerateConfig, "temperature", "Sampling temperature; 0 decodes greedily.")
@cli.field_option(GenerateConfig, "seed", "Seed of the sampling.")
@cli.compute_options(GenerateConfig)
@cli.stage_options(force=False)
def generate(model, onnx_dir, image, prompt, recipe, as_json, **flags) -> None:
    """Answer PROMPT about IMAGE with a PyTorch model directory, or an ONNX export (--onnx)."""
    cli.quiet_libraries()
    from qslaw_pipe.pipeline.data.images import open_image

    cfg = merge_recipe(GenerateConfig, recipe, flags)
    picture = open_image(image) if image else None
    if onnx_dir is not None:
        from qslaw_pipe.exports.onnx.runtime import OrtVlm
        from qslaw_pipe.pipeline.artifact import artifact_at

        artifact_at(onnx_dir, fix="pass --onnx a directory written by `qslaw-pipe export --format onnx`")
        vlm = OrtVlm(onnx_dir, device=cfg.device.partition(":")[0])
        answer = vlm.generate(prompt, picture, cfg.max_new_tokens, cfg.temperature, cfg.seed)
        cli.emit({"answer": answer, "model": str(onnx_dir), "runtime": "onnxruntime"}, as_json, answer)
        return
    from qslaw_pipe.pipeline.device import resolve
    from qslaw_pipe.pipeline.model import load_model
    from qslaw_pipe.stages.evaluate.generate import generate as answer_to

    compute = resolve(cfg.device, cfg.dtype)
    lm = load_model(resolve_model(model), compute.dtype, compute.device)
    answer = answer_to(lm, prompt, picture, cfg.max_new_tokens, cfg.temperature, cfg.seed)
    cli.emit({"answer": answer, "model": str(lm.path)}, as_json, answer)


@click.command("mcq")
@click.option(
    "--run-dir", type=click.Path(path_type=Path), required=True, help="Run directory with a finished tune/."
)
@click.option(
    "--baseline",
    "baselines",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Another tuned run directory to score on the same questions (repeatable).",
)
@cli.field_option(McqConfig, "data", "easyvqa, or a ScienceQA directory.")
@cli.field_option(McqConfig, "split", "Split of --data to score.")
@cli.field_option(McqConfig, "limit", "Questions scored (seeded subset; 0 = all).")
@cli.field_option(McqConfig, "batch_size", "Questions per generate call (PyTorch).")
@cli.field_option(McqConfig, "max_new_tokens", "Tokens generated per answer.")
@cli.field_option(McqConfig, "seed", "Seed of the question subset and of easy-VQA's options.")
@cli.field_option(
    McqConfig,
    "onnx",
    "Score this export directory (written by `export --format onnx`) in onnxruntime instead.",
    type=click.Path(exists=True, file_okay=False),
)
@cli.compute_options(McqConfig)
@cli.stage_options
def mcq(run_dir, baselines, recipe, force, as_json, **flags) -> None:
    """Multiple-choice accuracy of RUN_DIR's tuned model (and of each --baseline run), side by side."""
    cli.quiet_libraries()
    from qslaw_pipe.stages.evaluate.mcq import run_mcq, table

    cfg = merge_recipe(McqConfig, recipe, flags)
    results = [(Path(r), run_mcq(cfg, Path(r), force).artifact.metrics) for r in (run_dir, *baselines)]
    cli.emit({str(r): m for r, m in results}, as_json, table(results))


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
def ppl(run_dir, model, text, recipe, force, as_json, **flags) -> None:
    """Perplexity of the full-precision LM and of RUN_DIR/calibrate's fake-quant LM, side by side."""
    cli.quiet_libraries()
    from qslaw_pipe.stages.evaluate.ppl import run_ppl

    cfg = merge_recipe(PplConfig, recipe, flags)
    result = run_ppl(cfg, run_dir, resolve_model(model), text or default_text_path(), force)
    m = result.artifact.metrics
    human = (
        f"perplexity, held-out {m['split']}, {m['windows']} x {m['seqlen']} tokens\n"
        f"  {'full precision':<24}{m['fp']:10.2f}\n  {m['quantizer']:<24}{m['quantized']:10.2f}"
    )
    cli.emit({"artifact": str(result.artifact.path), **m}, as_json, human)


@click.group("eval")
def group() -> None:
    """Evaluate a run: `ppl` (held-out WikiText perplexity), `mcq` (multiple-choice accuracy)."""


group.add_command(ppl)
group.add_command(mcq)
