"""`qslaw-pipe`: one subcommand per stage. Each reads the previous stage's artifact from --run-dir."""

import logging

import click

# before the stages import transformers (which imports torchao): keep optional-extension and deprecation
# notices of those libraries out of every command's output, --help included
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

from qslaw_pipe import __version__, cli_common  # noqa: E402
from qslaw_pipe.stages import calibrate, evaluate, export, fold, prepare, run, tune  # noqa: E402

HELP = """QSLAW for LLaVA-style models: 4-bit LM weights, learned group-wise scales.

\b
Stages, each writing RUN_DIR/<stage>/ (safetensors + manifest.json):
  run        the main job: every stage below on the default model, resumable
  prepare    build the default VLM (SmolLM2-135M + DINOv2-S, aligned projector) offline into the cache
  align      stage-1 alignment: train the projector alone on image-caption pairs
  calibrate  OmniQuant (or RTN) int-k qparams of the LM: delta, zero point per group
  tune       QSLAW: learn group scales + projector on image QA (or a baseline)
  fold       pack the int-k codes (tuned scales folded in, exact) with delta, zero point
  export     ONNX (MatMulNBits / QDQ / our int4 op) for onnxruntime, or torchao int4
  eval ppl   held-out WikiText perplexity, full precision vs quantized
  eval mcq   multiple-choice accuracy of tuned runs, side by side
  generate   answer a question about an image (PyTorch model dir or --onnx export)

Every stage reuses a finished artifact with the same config, refuses a different one
without --force, takes --config recipe.yaml (keys as its flags), and prints JSON with --json.
"""


@click.group(help=HELP)
@click.version_option(__version__, prog_name="qslaw-pipe")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
def main(debug: bool) -> None:
    cli_common.DEBUG["on"] = debug


main.add_command(prepare.command)
main.add_command(evaluate.generate.command)
main.add_command(calibrate.command)
main.add_command(tune.align.command)
main.add_command(tune.command)
main.add_command(fold.command)
main.add_command(export.command)
main.add_command(evaluate.group)
main.add_command(run.command)
