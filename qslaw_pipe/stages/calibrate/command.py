"""`qslaw-pipe calibrate`: flags -> CalibrateConfig -> stage.run."""

import click

from qslaw_pipe.cli_common import (
    config_option,
    done,
    emit,
    field_option,
    force_option,
    json_option,
    model_option,
    quiet_libraries,
    run_dir_option,
    text_option,
    user_errors,
)
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.pipeline.data.text import default_text_path
from qslaw_pipe.pipeline.model import resolve_model
from qslaw_pipe.stages.calibrate.config import CALIBS, METHODS, CalibrateConfig
from qslaw_pipe.stages.calibrate.stage import run

C = CalibrateConfig


def _group(value: str) -> int:
    return -1 if value == "per-channel" else int(value)


@click.command("calibrate")
@run_dir_option
@model_option
@field_option(C, "bits", "Weight bits.", type=click.Choice(["2", "3", "4", "8"]))
@field_option(
    C,
    "group_size",
    "Inputs per quantization group (-1: per-channel); a short last group is allowed (576 = 4x128 + 64).",
    type=click.Choice(["32", "64", "128", "per-channel", "-1"]),
)
@field_option(C, "method", "omniquant (learned clipping) or rtn (min-max).", type=click.Choice(METHODS))
@field_option(
    C,
    "calib",
    "text: WikiText chunks; hybrid: each chunk led by an easy-VQA image sample.",
    type=click.Choice(CALIBS),
)
@field_option(C, "nsamples", "Calibration sequences.")
@field_option(C, "seqlen", "Tokens per sequence.")
@field_option(C, "epochs", "Passes over the samples per block.")
@field_option(
    C,
    "lr",
    "AdamW learning rate of the clipping logits (logits start at 4; a large rate lets few steps move them).",
)
@field_option(C, "batch_size", "Sequences per step.")
@field_option(C, "seed", "Seed of the sample order.")
@field_option(
    C,
    "rules",
    "Targeting rule PATTERN=quantize|skip (PATTERN exact or re:REGEX), before the defaults; repeatable.",
    flag="rule",
    multiple=True,
)
@text_option
@config_option
@force_option
@json_option
@user_errors
def command(run_dir, model, recipe, force, as_json, text, bits, group_size, rules, **flags) -> None:
    """OmniQuant (or RTN) int-k qparams for the LM's decoder Linears -> RUN_DIR/calibrate/."""
    quiet_libraries()
    flags.update(
        bits=int(bits) if bits else None,
        group_size=_group(group_size) if group_size else None,
        rules=tuple(rules) or None,
    )
    cfg = merge_recipe(CalibrateConfig, recipe, flags)
    result = run(cfg, run_dir, resolve_model(model), text or default_text_path(), force)
    m = result.artifact.metrics
    lines = [done(result, f"{m['layers']} layers, {cfg.method}, W{cfg.bits}")]
    lines += [
        f"  block {b['block']:2d}: loss {b['loss_before']:.3e} -> {b['loss_after']:.3e}" for b in m["blocks"]
    ]
    emit({"artifact": str(result.artifact.path), "reused": result.reused, **m}, as_json, "\n".join(lines))
