"""`qslaw-pipe`: one subcommand per stage. Each reads the previous stage's artifact from --run-dir."""

import importlib
import logging
import sys

import click

# before the stages import transformers (which imports torchao): keep optional-extension and deprecation
# notices of those libraries out of every command's output, --help included
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

from qslaw_pipe import __version__, cli_common  # noqa: E402

# every command, imported only when it runs (or shows its own --help): `qslaw-pipe --help` imports no torch
COMMANDS = {
    "prepare": "qslaw_pipe.stages.prepare.command:command",
    "generate": "qslaw_pipe.stages.evaluate.command:generate",
    "calibrate": "qslaw_pipe.stages.calibrate.command:command",
    "align": "qslaw_pipe.stages.tune.align:command",
    "tune": "qslaw_pipe.stages.tune.command:command",
    "fold": "qslaw_pipe.stages.fold.command:command",
    "export": "qslaw_pipe.stages.export.command:command",
    "eval": "qslaw_pipe.stages.evaluate.command:group",
    "run": "qslaw_pipe.stages.run:command",
}

HELP = """QSLAW for LLaVA-style models: 4-bit LM weights, learned group-wise scales.

\b
Stages, each writing RUN_DIR/<stage>/ (safetensors + manifest.json):
  run        the main job: every stage below on the default model, resumable
  prepare    build the default VLM (SmolLM2-135M + DINOv2-S, aligned projector) offline into the cache
  align      stage-1 alignment: train the projector alone on image-caption pairs
  calibrate  int-k qparams of the LM by a calibrator (OmniQuant, Q-VLM, RTN): delta, zero point per group
  tune       QSLAW: learn group scales + projector on image QA (or a baseline method)
  fold       pack the int-k codes (tuned scales folded in, exact) with delta, zero point
  export     ONNX (MatMulNBits / QDQ / our int4 op) for onnxruntime, torchao int4, or compressed-tensors
  eval ppl   held-out WikiText perplexity, full precision vs quantized
  eval mcq   multiple-choice accuracy of tuned runs, side by side
  generate   answer a question about an image (PyTorch model dir or --onnx export)

Every stage reuses a finished artifact with the same config, refuses a different one
without --force, takes --config recipe.yaml (keys as its flags), and prints JSON with --json.
"""


class Commands(click.Group):
    """The command group: commands imported when they run (COMMANDS), and usage errors (an unknown flag, a
    value outside its choices) one line in the form of every other error, naming the --help that lists what
    is valid."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter) -> None:
        """The stages are listed in HELP; importing every command to list them again would import torch."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else "qslaw-pipe"
            said = e.format_message().rstrip(".")
            click.echo(f"error: {said[:1].lower()}{said[1:]}; see `{where} --help`", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.exceptions.ClickException as e:
            click.echo(f"error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        sys.exit(status if isinstance(status, int) else 0)


@click.group(cls=Commands, help=HELP)
@click.version_option(__version__, prog_name="qslaw-pipe")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error instead of one line.")
def main(debug: bool) -> None:
    cli_common.DEBUG["on"] = debug
