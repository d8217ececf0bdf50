"""`qslaw-pipe eval mcq`: multiple-choice accuracy of tuned runs, overall and per category, side by side.

Each run directory's `R/tune/` model answers the same test questions greedily; the letter is parsed
from its output (pipeline/mcq.py). Results go to `R/eval-mcq/` (metrics + predictions.jsonl), reused
when the same evaluation was done before.
"""

import json
import random
from pathlib import Path

from tqdm import tqdm

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.artifact import (
    StageResult,
    artifact_at,
    identity,
    read_artifact,
    run_stage,
    stage_dir,
)
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.data.sets import load_samples
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.stages.evaluate.answers import greedy_answers
from qslaw_pipe.stages.evaluate.config import McqConfig
from qslaw_pipe.stages.evaluate.scoring import score
from qslaw_pipe.stages.evaluate.tuned_model import load_tuned


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


def evaluate_mcq(run_dir: Path, cfg: McqConfig, out: Path, upstream: dict, bar: bool = True) -> dict:
    """Score R/tune's model (or, with cfg.onnx, its export) on the test questions; `upstream`: the verified
    tune (and calibrate, export) artifacts."""
    tune = upstream["tune"]
    samples = mcq_samples(cfg)
    runtime = f"onnxruntime ({Path(cfg.onnx).name})" if cfg.onnx else "pytorch"
    progress = tqdm(total=len(samples), desc=f"eval mcq {tune.config['method']} {runtime}", disable=not bar)
    if cfg.onnx:
        outputs = onnx_answers(Path(cfg.onnx), samples, cfg.max_new_tokens, progress, cfg.device)
    else:
        compute = resolve(cfg.device, cfg.dtype)
        lm, _ = load_tuned(run_dir, compute, upstream)
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
    tune = read_artifact(run_dir, "tune", command="qslaw-pipe tune --run-dir {run_dir}")
    inputs = {"tune": tune.path}
    if "calibrate" in tune.manifest["inputs"]:  # a quantized method: its qparams rebuild the tuned model
        inputs["calibrate"] = stage_dir(run_dir, "calibrate")
    if cfg.onnx:
        inputs["onnx"] = this_runs_export(Path(cfg.onnx), run_dir).path
    stage = f"eval-mcq-{Path(cfg.onnx).name}" if cfg.onnx else "eval-mcq"
    return run_stage(
        run_dir,
        stage,
        cfg,
        inputs,
        lambda out, _resuming, upstream: evaluate_mcq(run_dir, cfg, out, upstream, bar),
        command="qslaw-pipe eval mcq --run-dir {run_dir}",
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
