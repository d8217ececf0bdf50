"""Stage `export`: deployable models from the fold artifact, by the exporter the config belongs to
(exports/: onnx, torchao, compressed-tensors; codes never re-quantized). R/<cfg.stage>/ holds what it wrote."""

from pathlib import Path

from qslaw_pipe.exports import exporter
from qslaw_pipe.pipeline.artifact import StageResult, read_artifact, run_stage
from qslaw_pipe.pipeline.config import config_to_dict


def run(cfg, run_dir: Path, force: bool = False) -> StageResult:
    """R/<cfg.stage>/ from R/fold with cfg's exporter (reused, refused or rebuilt under the contract)."""
    fold = read_artifact(run_dir, "fold", command="qslaw-pipe fold --run-dir {run_dir}")
    impl = exporter(cfg.FORMAT).impl()
    config = {"format": cfg.FORMAT, **config_to_dict(cfg)}
    return run_stage(
        run_dir,
        cfg.stage,
        config,
        {"fold": fold.path},
        lambda out, _resuming, upstream: impl.write(upstream["fold"].path, out, cfg),
        earlier=getattr(cfg, "EARLIER", {}),
        command=f"qslaw-pipe export --run-dir {{run_dir}} --format {cfg.FORMAT}",
        force=force,
        model_input=None,
    )
