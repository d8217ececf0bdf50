"""`qslaw-pipe calibrate`: flags -> CalibrateConfig -> stage.run."""

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.paths import default_text_path, resolve_model
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.stages.calibrate.calibrators import CALIBRATORS, importer_name
from qslaw_pipe.stages.calibrate.config import CALIBS, CalibrateConfig

C = CalibrateConfig


def _group(value: str) -> int:
    return -1 if value == "per-channel" else int(value)


@click.command("calibrate")
@cli.run_dir_option
@cli.model_option
@cli.field_option(C, "bits", "Weight bits.", type=click.Choice(["2", "3", "4", "8"]))
@cli.field_option(
    C,
    "group_size",
    "Inputs per quantization group, or per-channel (-1 in a recipe); a short last group is allowed "
    "(576 = 4x128 + 64).",
    type=click.Choice(["32", "64", "128", "per-channel"]),
)
@cli.field_option(
    C,
    "method",
    "; ".join(f"{c.name}: {c.help}" for c in CALIBRATORS.values()) + ".",
    type=click.Choice(list(CALIBRATORS)),
)
@cli.field_option(
    C,
    "calib",
    "text: WikiText chunks; hybrid: each chunk led by an easy-VQA image sample.",
    type=click.Choice(CALIBS),
)
@cli.field_option(C, "nsamples", "Calibration sequences.")
@cli.field_option(C, "seqlen", "Tokens per sequence.")
@cli.field_option(C, "epochs", "Passes over the samples per block.")
@cli.field_option(
    C,
    "lr",
    "Learning rate. Unset: by method (omniquant, qvlm: 0.5 for AdamW on the clipping logits, which start at 4; "
    "signround: 1 / its steps per block, decaying to 0).",
    type=float,
)
@cli.field_option(C, "batch_size", "Sequences per step.")
@cli.field_option(C, "max_block", "qvlm: most decoder layers reconstructed jointly (the search budget).")
@cli.field_option(
    C, "entropy_quantile", "qvlm: a layer whose input entropy reaches this quantile starts a new block."
)
@cli.field_option(C, "seed", "Seed of the sample order.")
@cli.field_option(
    C,
    "from_checkpoint",
    "Start from a quantized checkpoint directory instead of calibrating (GPTQ, AWQ, AutoRound or "
    "compressed-tensors; of this model or of its language model): its codes are imported exactly. Implies "
    "--method checkpoint; pass the checkpoint's --bits and --group-size.",
    type=click.Path(exists=True, file_okay=False),
)
@cli.field_option(
    C,
    "rules",
    "Targeting rule PATTERN=quantize|skip (PATTERN exact or re:REGEX), before the defaults; repeatable.",
    flag="rule",
    multiple=True,
)
@cli.compute_options(C)
@cli.text_option
@cli.nproc_option
@cli.stage_options
def command(run_dir, model, recipe, force, as_json, text, bits, group_size, rules, nproc, **flags) -> None:
    """Int-k qparams for the LM's decoder Linears (OmniQuant, Q-VLM, SignRound, RTN, or a quantized checkpoint's) -> RUN_DIR/calibrate/.

    Data parallel: `qslaw-pipe calibrate --nproc N ...`, or `torchrun --nproc-per-node N -m qslaw_pipe calibrate ...`."""
    cli.relaunch_under_torchrun(nproc)
    cli.quiet_libraries()
    from qslaw_pipe.stages.calibrate.stage import run

    if flags.get("from_checkpoint") and not flags.get("method"):
        flags["method"] = importer_name()
    flags.update(
        bits=int(bits) if bits else None,
        group_size=_group(group_size) if group_size else None,
        rules=tuple(rules) or None,
    )
    cfg = merge_recipe(CalibrateConfig, recipe, flags)
    result = run(cfg, run_dir, resolve_model(model), text or default_text_path(), force)
    if result is None:  # a rank other than 0: rank 0 reports
        return
    m = result.artifact.metrics
    blocks = "".join(
        f"\n  block {b['block']:2d}: loss {b['loss_before']:.3e} -> {b['loss_after']:.3e}"
        for b in m["blocks"]
    )
    cli.report(result, as_json, f"{m['layers']} layers, {cfg.method}, W{cfg.bits}", blocks)
