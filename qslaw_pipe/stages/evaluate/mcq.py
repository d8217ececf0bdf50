"""`qslaw-pipe eval mcq`: multiple-choice accuracy of tuned runs, overall and per category, side by side.

Each run directory's `R/tune/` model answers the same test questions greedily; the letter is parsed
from its output (pipeline/mcq.py). Results go to `R/eval-mcq/` (metrics + predictions.jsonl), reused
when the same evaluation was done before.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import click
from tqdm import tqdm

from qslaw_pipe import cli_common as cli
from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.artifact import (
    StageResult,
    artifact_at,
    identity,
    read_artifact,
    run_stage,
    stage_dir,
)
from qslaw_pipe.pipeline.config import config_to_dict, merge_recipe
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.data.sets import load_samples
from qslaw_pipe.pipeline.device import check_placement, resolve
from qslaw_pipe.stages.evaluate.answers import greedy_answers
from qslaw_pipe.stages.evaluate.scoring import score
from qslaw_pipe.stages.evaluate.tuned_model import load_tuned


@dataclass(frozen=True)
class McqConfig:
    """limit: questions scored (a seeded random subset; 0 = all). onnx: score that export directory
    (written by `export --format onnx`) in onnxruntime instead of the PyTorch model."""

    data: str = "easyvqa"
    split: str = "test"
    limit: int = 500
    batch_size: int = 16
    max_new_tokens: int = 4
    seed: int = 0
    onnx: str | None = None
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.limit < 0 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise QslawError(
                "invalid --limit/--batch-size/--max-new-tokens", "use limit >= 0 and positive sizes"
            )


def mcq_samples(cfg: McqConfig) -> list:
    samples = [s for s in load_samples(cfg.data, cfg.split, cfg.seed) if s.choices]
    if not samples:
        raise QslawError(
            f"--data {cfg.data} split {cfg.split} has no multiple-choice question", "use easyvqa or ScienceQA"
        )
    if cfg.limit and cfg.limit < len(samples):
        samples = random.Random(cfg.seed).sample(samples, cfg.limit)
    # images first, then text: a generation batch is all one modality
    return sorted(samples, key=lambda s: s.image is None)


def onnx_answers(
    export_dir: Path, samples: list, max_new_tokens: int, progress, device: str = "auto"
) -> list[str]:
    from qslaw_pipe.exports.onnx.runtime import OrtVlm

    vlm, outputs = OrtVlm(export_dir, device=device.partition(":")[0]), []
    for s in samples:
        image = open_image(s.image) if s.image is not None else None
        outputs.append(vlm.generate(s.prompt, image, max_new_tokens))
        progress.update(1)
    return outputs


def evaluate_mcq(run_dir: Path, cfg: McqConfig, out: Path, bar: bool = True) -> dict:
    tune = read_artifact(run_dir, "tune")
    samples = mcq_samples(cfg)
    runtime = f"onnxruntime ({Path(cfg.onnx).name})" if cfg.onnx else "pytorch"
    progress = tqdm(total=len(samples), desc=f"eval mcq {tune.config['method']} {runtime}", disable=not bar)
    if cfg.onnx:
        outputs = onnx_answers(Path(cfg.onnx), samples, cfg.max_new_tokens, progress, cfg.device)
    else:
        compute = resolve(cfg.device, cfg.dtype)
        lm, _ = load_tuned(run_dir, compute)
        outputs = []
        for group in (True, False):
            part = [s for s in samples if (s.image is not None) == group]
            outputs += greedy_answers(lm, part, cfg.max_new_tokens, cfg.batch_size, progress, compute)
    progress.close()
    with (out / "predictions.jsonl").open("w") as f:
        for s, o in zip(samples, outputs, strict=True):
            f.write(json.dumps({"prompt": s.prompt, "target": s.target, "output": o, "meta": s.meta}) + "\n")
    return {
        "method": tune.config["method"],
        "tune_config": tune.config,
        "runtime": runtime,
        **score(samples, outputs),
    }


def this_runs_export(path: Path, run_dir: Path):
    """The export at `path`, verified, and made from `run_dir`'s own fold (its score is filed under that
    run's tune); another run's export is one line."""
    export = artifact_at(path, fix="pass --onnx an export directory")
    fold = stage_dir(run_dir, "fold")
    made_from = (export.manifest.get("inputs") or {}).get("fold", {}).get("sha256")
    if not (fold / "manifest.json").is_file() or made_from != identity(read_artifact(run_dir, "fold").path):
        raise QslawError(
            f"{path} was exported from another run's fold than {fold}",
            f"pass --run-dir the run it was exported from, or export this run: qslaw-pipe export --run-dir {run_dir}",
        )
    return export


def run_mcq(cfg: McqConfig, run_dir: Path, force: bool = False, bar: bool = True) -> StageResult:
    read_artifact(run_dir, "tune")
    inputs = {"tune": stage_dir(run_dir, "tune")}
    if cfg.onnx:
        inputs["onnx"] = this_runs_export(Path(cfg.onnx), run_dir).path
    return run_stage(
        run_dir,
        f"eval-mcq-{Path(cfg.onnx).name}" if cfg.onnx else "eval-mcq",
        config_to_dict(cfg),
        inputs,
        lambda out, _r: evaluate_mcq(run_dir, cfg, out, bar),
        force=force,
        model_input=None,
    )


def label(run_dir: Path, metrics: dict) -> str:
    cfg = metrics["tune_config"]
    extra = " no-warmup" if cfg["warmup_steps"] == 0 else ""
    extra += " mm-only" if cfg["mix_ratio"].endswith(":0") else ""
    return f"{metrics['method']}{extra} ({run_dir.name})"


def table(results: list[tuple[Path, dict]]) -> str:
    """Accuracy per run (columns) for overall and each category value (rows)."""
    heads = [label(r, m) for r, m in results]
    rows = [("overall", [m["accuracy"] for _, m in results], results[0][1]["n"])]
    for key, values in results[0][1]["categories"].items():
        for value, v in values.items():
            rows.append(
                (
                    f"{key}={value}",
                    [m["categories"].get(key, {}).get(value, {}).get("accuracy") for _, m in results],
                    v["n"],
                )
            )
    width = max(12, *(len(h) for h in heads))
    lines = [f"{'':<24}{'n':>6}  " + "  ".join(f"{h:>{width}}" for h in heads)]
    for name, accs, n in rows:
        cells = "  ".join(f"{'-' if a is None else f'{100 * a:.1f}%':>{width}}" for a in accs)
        lines.append(f"{name:<24}{n:>6}  {cells}")
    return "\n".join(lines)


C = McqConfig


@click.command("mcq")
@click.option(
    "--run-dir", type=click.Path(path_type=Path), required=True, help="Run directory with a finished tune/."
)
@click.option(
    "--baseline",
    "baselines",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Another tuned run directory to score on the same questions (repeatable).",
)
@cli.field_option(C, "data", "easyvqa, or a ScienceQA directory.")
@cli.field_option(C, "split", "Split of --data to score.")
@cli.field_option(C, "limit", "Questions scored (seeded subset; 0 = all).")
@cli.field_option(C, "batch_size", "Questions per generate call (PyTorch).")
@cli.field_option(C, "max_new_tokens", "Tokens generated per answer.")
@cli.field_option(C, "seed", "Seed of the question subset and of easy-VQA's options.")
@cli.field_option(
    C,
    "onnx",
    "Score this export directory (written by `export --format onnx`) in onnxruntime instead.",
    type=click.Path(exists=True, file_okay=False),
)
@cli.compute_options(C)
@cli.stage_options
def command(run_dir, baselines, recipe, force, as_json, **flags) -> None:
    """Multiple-choice accuracy of RUN_DIR's tuned model (and of each --baseline run), side by side."""
    cli.quiet_libraries()
    cfg = merge_recipe(McqConfig, recipe, flags)
    results = [(Path(r), run_mcq(cfg, Path(r), force).artifact.metrics) for r in (run_dir, *baselines)]
    cli.emit({str(r): m for r, m in results}, as_json, table(results))
