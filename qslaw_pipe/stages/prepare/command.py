"""`qslaw-pipe prepare`: flags -> PrepareConfig -> stage.run."""

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.stages.prepare.config import PrepareConfig


@click.command("prepare")
@cli.field_option(
    PrepareConfig, "image_size", "Square input size for DINOv2; image tokens = (size/14)^2 (84 -> 36)."
)
@cli.field_option(PrepareConfig, "seed", "Seed of the projector's initialisation.")
@cli.field_option(
    PrepareConfig, "align", "Load the aligned projector shipped with the package (else a fresh one)."
)
@cli.stage_options
def command(recipe, force: bool, as_json: bool, **flags) -> None:
    """Build the default VLM (SmolLM2-135M + DINOv2-S) offline into the cache; instant when already built."""
    cli.quiet_libraries()
    from qslaw_pipe.stages.prepare.stage import run

    result = run(merge_recipe(PrepareConfig, recipe, flags), force)
    verb = "reused" if result.reused else "built"
    cli.emit(
        {"model_dir": str(result.artifact.path), "reused": result.reused, **result.artifact.metrics},
        as_json,
        f"{verb} default model at {result.artifact.path}",
    )
