"""Shared Click plumbing: common options, one-line errors, human or JSON output."""

import functools
import json
import logging
import os
import sys
from pathlib import Path

import click

from qslaw_pipe.pipeline.errors import QslawError


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("torchao").setLevel(logging.ERROR)


def user_errors(fn):
    """Turn QslawError into `error: <one line>` and exit status 2; everything else is a bug and propagates."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QslawError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper


def emit(result: dict, as_json: bool, human: str) -> None:
    """Print the result as JSON (`--json`) or as the human summary."""
    click.echo(json.dumps(result, indent=2, sort_keys=True, default=str) if as_json else human)


run_dir_option = click.option(
    "--run-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run directory; this stage writes RUN_DIR/<stage>/.",
)
force_option = click.option(
    "--force", is_flag=True, help="Replace an existing artifact made with another config."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
config_option = click.option(
    "--config",
    "recipe",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML recipe with this stage's keys; flags given on the command line override it.",
)
model_option = click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Local Hugging Face model directory (LLaVA-style or causal LM). Default: the model built by `qslaw-pipe prepare`.",
)
