"""`qslaw-pipe fold`: flags -> FoldConfig -> stage.run."""

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.stages.fold.config import SOURCES, FoldConfig


@click.command("fold")
@cli.run_dir_option
@cli.field_option(
    FoldConfig,
    "source",
    "auto: the tuned scales when RUN_DIR/tune exists, else the calibration alone (s = 1).",
    type=click.Choice(SOURCES),
)
@cli.field_option(
    FoldConfig, "device", "Where to compute the codes: auto (CUDA when there is one), cpu, cuda, cuda:N."
)
@cli.stage_options
def command(run_dir, recipe, force, as_json, **flags) -> None:
    """Fold scales into packed int-k codes + delta + zero point -> RUN_DIR/fold/ (exact)."""
    cli.quiet_libraries()
    from qslaw_pipe.stages.fold.stage import run

    result = run(merge_recipe(FoldConfig, recipe, flags), run_dir, force)
    m = result.artifact.metrics
    mib = {k: m[k] / 2**20 for k in ("quantized_bytes", "quantized_fp16_bytes", "artifact_tensor_bytes")}
    details = (
        f"\n  quantized Linears: {mib['quantized_bytes']:.1f} MiB vs {mib['quantized_fp16_bytes']:.1f} MiB in fp16 "
        f"({m['quantized_ratio']:.3f}x); whole artifact {mib['artifact_tensor_bytes']:.1f} MiB"
    )
    cli.report(result, as_json, f"{m['layers']} layers from {m['source']}, {m['method']}", details)
