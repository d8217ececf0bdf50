"""Stage `tune`: vision-language instruction tuning of the quantized model (QSLAW, Xie et al., ACM MM 2024).

`qslaw` learns one scale per weight group of every quantized LM Linear (eq. 7-8, kernels/qslaw.py)
and the projector, from the calibrate artifact's delta and zero point. Multimodal warmup: the first
`warmup_steps` batches are multimodal only, then each batch mixes multimodal and WikiText samples at
`mix_ratio`. The baselines (`fp`, `qlora`, `frozen`) and ablations (`--no-warmup`, `--mm-only`) run
in the same loop on the same batches.

Artifact `R/tune/`: trainable.safetensors (scales + projector, LoRA + projector, or LM + projector),
metrics.csv, loss.png. Checkpoints live in the partial directory and are dropped once finished.

Under torchrun (`torchrun --nproc-per-node N -m qslaw_pipe tune ...` or `tune --nproc N`) every rank loads
the model and trains on its share of each global batch (loop.py); the ranks first check that they loaded
the same model and calibrate artifact, and rank 0 alone writes (pipeline/distributed.run_ranked).
"""

import dataclasses
from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline import distributed
from qslaw_pipe.pipeline.artifact import StageResult, identity, read_artifact, run_stage, stage_dir
from qslaw_pipe.pipeline.data.sets import load_train_samples
from qslaw_pipe.pipeline.data.text import read_text, split_text, token_chunks
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.pipeline.methods import method
from qslaw_pipe.pipeline.sysinfo import peak_rss_mb
from qslaw_pipe.pipeline.tuned import write_tuned
from qslaw_pipe.stages.tune.batches import StepSampler
from qslaw_pipe.stages.tune.config import TEXT_DATA, TuneConfig, parse_mix
from qslaw_pipe.stages.tune.loop import CHECKPOINT, train, write_metrics
from qslaw_pipe.stages.tune.methods import build_method_model, trainable_state
from qslaw_pipe.stages.tune.plot import plot_losses

METRICS_FILE = "metrics.csv"
CALIBRATE = "qslaw-pipe calibrate --run-dir {run_dir}"


def tune(
    model_dir: Path,
    run_dir: Path,
    text_path: Path,
    cfg: TuneConfig,
    out: Path,
    resuming: bool,
    upstream: dict,
    bar: bool = True,
) -> dict:
    """Train `cfg.method`, write trainable.safetensors, metrics.csv and loss.png into `out`; returns metrics.
    `upstream`: the verified calibrate artifact (quantized methods), made from this model."""
    compute = resolve(cfg.device, cfg.dtype)
    compute = dataclasses.replace(compute, device=distributed.init(compute.device))
    fix = "give every rank the same --model and run directory (a shared file system across nodes)"
    distributed.agree("model", identity(model_dir), fix)
    calib = upstream.get("calibrate")
    distributed.agree("calibrate artifact", identity(calib.path) if calib else None, fix)
    torch.manual_seed(cfg.seed)
    lm = build_method_model(
        model_dir, cfg.method, calib, cfg.lora_rank, cfg.lora_alpha, cfg.compile, compute, cfg.keep_weights
    )
    if cfg.grad_checkpoint:
        lm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    text_only = cfg.data == TEXT_DATA
    if not (text_only or lm.multimodal):
        raise QslawError(
            f"{model_dir} is a text-only LM and --data {cfg.data} is multimodal", "tune it with --data text"
        )
    mix = (0, 1) if text_only else parse_mix(cfg.mix_ratio)
    chunks = (
        token_chunks(lm.tokenizer, split_text(read_text(text_path), "calib"), cfg.text_seqlen, 4096)
        if mix[1]
        else []
    )
    samples = [] if text_only else load_train_samples(cfg.data, cfg.seed, cfg.image_folder)
    check_budget(cfg, len(samples) if mix[0] else len(chunks))
    sampler = StepSampler(
        lm.processor,
        lm.arch,
        samples,
        chunks,
        cfg.batch_size,
        cfg.warmup_steps,
        mix,
        cfg.seed,
    )
    rows = train(lm, sampler, cfg, out, resuming, bar, compute)
    state = trainable_state(lm.model)
    if distributed.is_main():
        write_tuned(out, cfg.method, state)
        write_metrics(out / METRICS_FILE, rows)
        plot_losses(rows, cfg.warmup_steps, out / "loss.png", f"tune --method {cfg.method}")
        (out / CHECKPOINT).unlink(missing_ok=True)
    timed = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    return {
        "steps": cfg.steps,
        "final_loss": sum(r["loss"] for r in rows[-10:]) / len(rows[-10:]),
        "mean_step_s": sum(timed) / len(timed),
        "trainable_params": sum(t.numel() for t in state.values()),
        "peak_rss_mb_train": round(peak_rss_mb(), 1),
        "lm_lr": cfg.resolved_lm_lr,
        **compute.record(),
        "weight_dtype": "float32"
        if method(cfg.method).full_precision
        else str(compute.dtype).removeprefix("torch."),
        "peak_gpu_mb": compute.peak_memory_mb(),
        "world_size": distributed.world(),
    }


MAX_EPOCHS = 10_000  # passes over the training pool beyond which --steps is a typo, not a plan


def check_budget(cfg: TuneConfig, pool: int) -> None:
    """Refuse, before the first step, a batch larger than the training pool it is drawn from, and a number
    of steps that would pass over that pool more than MAX_EPOCHS times (a run that would never end)."""
    if cfg.batch_size > pool:
        raise QslawError(
            f"--batch-size {cfg.batch_size} is larger than the {pool} training examples it is drawn from",
            f"use --batch-size {pool} or less, or more training data",
        )
    if cfg.steps * cfg.batch_size > MAX_EPOCHS * pool:
        raise QslawError(
            f"--steps {cfg.steps} would pass over the {pool} training examples "
            f"{cfg.steps * cfg.batch_size // pool} times",
            f"use --steps {MAX_EPOCHS * pool // cfg.batch_size} or fewer",
        )


def run(
    cfg: TuneConfig,
    run_dir: Path,
    model_dir: Path,
    text_path: Path,
    force=False,
    bar=True,
    stage: str = "tune",
) -> StageResult:
    """R/<stage>/ (tune, or align for the projector method) from the model at `model_dir` and the text
    corpus (reused, refused or resumed under the run-directory contract); `bar` shows progress bars.
    Under torchrun: every rank trains, rank 0 returns the StageResult and the others None."""
    inputs = {"model": model_dir, "text": text_path}
    if method(cfg.method).quantized:
        read_artifact(run_dir, "calibrate", command=CALIBRATE)  # one-line error when it is missing
        inputs["calibrate"] = stage_dir(run_dir, "calibrate")
    distributed.init(resolve(cfg.device, cfg.dtype).device)
    if cfg.shard and not distributed.active():
        raise QslawError("--shard splits the model over processes, and this is one", "add --nproc N (N >= 2)")
    if cfg.batch_size < distributed.world():
        raise QslawError(
            f"--batch-size {cfg.batch_size} is smaller than the {distributed.world()} ranks",
            "use a batch size of at least the number of processes",
        )
    command = f"qslaw-pipe {stage} --run-dir {{run_dir}}"
    return distributed.run_ranked(
        lambda work: run_stage(
            run_dir,
            stage,
            cfg,
            inputs,
            work,
            command=command,
            force=force,
        ),
        lambda out, resuming, upstream: tune(
            model_dir, run_dir, text_path, cfg, out, resuming, upstream, bar
        ),
    )
