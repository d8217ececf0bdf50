"""`qslaw-pipe`: one subcommand per stage. Each reads the previous stage's artifact from --run-dir."""

import click

from qslaw_pipe import __version__
from qslaw_pipe.stages import calibrate, evaluate, generate, prepare, run

HELP = """QSLAW for LLaVA-style models: 4-bit LM weights, learned group-wise scales.

\b
Stages, each writing RUN_DIR/<stage>/ (safetensors + manifest.json):
  run        the main job: every stage below on the default model, resumable
  prepare    build the default VLM (SmolLM2-135M + DINOv2-S) offline into the cache
  calibrate  OmniQuant (or RTN) int-k qparams of the LM: delta, zero point per group
  eval ppl   held-out WikiText perplexity, full precision vs quantized
  generate   answer a question about an image with a model directory

Every stage reuses a finished artifact with the same config, refuses a different one
without --force, and prints JSON with --json.
"""


@click.group(help=HELP)
@click.version_option(__version__, prog_name="qslaw-pipe")
def main() -> None:
    pass


main.add_command(prepare.command)
main.add_command(generate.command)
main.add_command(calibrate.command)
main.add_command(evaluate.group)
main.add_command(run.command)
