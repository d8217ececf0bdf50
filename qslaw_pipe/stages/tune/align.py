"""`qslaw-pipe align`: stage-1 alignment (LLaVA): train only the projector, the vision tower and the LM
frozen in full precision, on image-caption pairs (easy-VQA's labels as captions, or a LLaVA-JSON set).
It runs the tuning loop with the `projector` method and writes R/align/. With --ship, the projector
becomes the package's shipped one (pipeline/aligned.py), tied to the base model it was trained on:
`prepare` then builds the aligned default VLM on any machine without training.

    qslaw-pipe prepare --no-align                       # the base model (fresh projector)
    qslaw-pipe align --run-dir runs/align --ship        # train and ship the projector
"""

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.errors import QslawError
from qslaw_pipe.paths import default_model_dir, default_text_path
from qslaw_pipe.pipeline.artifact import StageResult
from qslaw_pipe.pipeline.config import config_to_dict, merge_recipe
from qslaw_pipe.pipeline.placement import check_placement
from qslaw_pipe.stages.tune.config import TuneConfig


@dataclass(frozen=True)
class AlignConfig:
    data: str = "easyvqa-captions"
    steps: int = 300
    batch_size: int = 8
    projector_lr: float = 1e-3
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)

    def tune_config(self) -> TuneConfig:
        """The tuning loop's settings: projector method, multimodal only, no warmup split."""
        return TuneConfig(
            method="projector",
            data=self.data,
            steps=self.steps,
            batch_size=self.batch_size,
            warmup_steps=self.steps,
            mix_ratio="1:0",
            projector_lr=self.projector_lr,
            checkpoint_every=self.checkpoint_every,
            seed=self.seed,
            compile=False,
            device=self.device,
            dtype=self.dtype,
        )


def run(
    cfg: AlignConfig, run_dir: Path, model_dir: Path, force: bool = False, bar: bool = True
) -> StageResult:
    from qslaw_pipe.stages.tune.stage import run as run_tuning

    return run_tuning(cfg.tune_config(), run_dir, model_dir, default_text_path(), force, bar, stage="align")


def ship_projector(result: StageResult, cfg: AlignConfig, model_dir: Path) -> Path:
    """Make R/align's projector the package's shipped one (tied to the base model's fingerprint)."""
    from qslaw_pipe.pipeline.aligned import base_fingerprint, recorded_sources, write_shipped
    from qslaw_pipe.pipeline.model import load_model
    from qslaw_pipe.pipeline.tensors import load_tensors
    from qslaw_pipe.pipeline.tuned import TRAINABLE_FILE

    tensors, _ = load_tensors(result.artifact.path / TRAINABLE_FILE)
    m = result.artifact.metrics
    base = base_fingerprint(load_model(model_dir).model, set(tensors), recorded_sources(model_dir))
    manifest = {
        "base": dataclasses.asdict(base),
        "base_model": model_dir.name,
        "config": config_to_dict(cfg),
        "data": cfg.data,
        "steps": m["steps"],
        "final_loss": m["final_loss"],
        "device": m.get("device_name"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "qslaw-pipe " + shlex.join(sys.argv[1:]),
    }
    return write_shipped(image_size(model_dir), tensors, manifest)


def image_size(model_dir: Path) -> int:
    """The square input size of a model directory's image processor."""
    processor = json.loads((Path(model_dir) / "processor_config.json").read_text())
    return processor["image_processor"]["size"]["height"]


C = AlignConfig


@click.command("align")
@cli.run_dir_option
@click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="The base LLaVA-style model to align. Default: the base default VLM (`qslaw-pipe prepare --no-align`).",
)
@cli.field_option(C, "data", "Image-caption pairs: easyvqa-captions, or a LLaVA-JSON caption set.")
@cli.field_option(C, "steps", "Optimizer steps.")
@cli.field_option(C, "batch_size", "Samples per step.")
@cli.field_option(C, "projector_lr", "AdamW learning rate of the projector.")
@cli.field_option(C, "checkpoint_every", "Steps between resume checkpoints.")
@cli.field_option(C, "seed", "Seed of the batch order.")
@cli.compute_options(C)
@click.option("--ship", is_flag=True, help="Make the result the projector that ships with the package.")
@cli.stage_options
def command(run_dir, model, ship: bool, recipe, force, as_json, **flags) -> None:
    """Stage-1 alignment: train the projector alone on image-caption pairs -> RUN_DIR/align/."""
    cli.quiet_libraries()
    cfg = merge_recipe(AlignConfig, recipe, flags)
    model_dir = Path(model) if model else default_model_dir(aligned=False)
    if not (model_dir / "config.json").is_file():
        fix = (
            "run `qslaw-pipe prepare --no-align` first"
            if model is None
            else "pass a LLaVA-style model directory"
        )
        raise QslawError(f"no model at {model_dir}", fix)
    result = run(cfg, run_dir, model_dir, force)
    m = result.artifact.metrics
    details = f"\n  final loss {m['final_loss']:.3f}, {m['mean_step_s']:.2f} s/step"
    if ship:
        details += f"\n  shipped: {ship_projector(result, cfg, model_dir)}"
    cli.report(result, as_json, f"projector, {m['steps']} steps on {cfg.data}", details)
