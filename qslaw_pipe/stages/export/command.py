"""`qslaw-pipe export`: --format picks an exporter; each exporter's own settings are flags too (exports/)."""

import dataclasses

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.exports import EXPORTERS
from qslaw_pipe.pipeline.config import load_recipe
from qslaw_pipe.stages.export.config import DEFAULT_FORMAT, export_config


def exporter_options(f):
    """One option per field of every exporter's Config (help and choices from its FLAGS)."""
    for spec in reversed(list(EXPORTERS.values())):
        cls = spec.impl().Config
        for field in reversed(dataclasses.fields(cls)):
            help_text, choices = cls.FLAGS[field.name]
            f = cli.field_option(
                cls, field.name, help_text, **({"type": click.Choice(choices)} if choices else {})
            )(f)
    return f


@click.command("export")
@cli.run_dir_option
@click.option(
    "--format",
    type=click.Choice(list(EXPORTERS)),
    default=None,
    help="; ".join(f"{e.name}: {e.help}" for e in EXPORTERS.values()) + f".  [default: {DEFAULT_FORMAT}]",
)
@exporter_options
@cli.stage_options
def command(run_dir, recipe, force, as_json, **flags) -> None:
    """Export RUN_DIR/fold to a deployable model -> RUN_DIR/export-<format>-<op>/."""
    cli.quiet_libraries()
    from qslaw_pipe.stages.export.stage import run

    given = {**(load_recipe(recipe) if recipe else {}), **{k: v for k, v in flags.items() if v is not None}}
    cfg = export_config(given, str(recipe) if recipe else "flags")
    result = run(cfg, run_dir, force)
    what, details = EXPORTERS[cfg.FORMAT].impl().describe(cfg, result.artifact.metrics, result.artifact.path)
    cli.report(result, as_json, what, details)
