"""Stage `tune`: vision-language instruction tuning of the quantized model (QSLAW, Xie et al., ACM MM 2024).

`qslaw` learns one scale per weight group of every quantized LM Linear (eq. 7-8, kernels/qslaw.py)
and the projector, from the calibrate artifact's delta and zero point. Multimodal warmup: the first
`warmup_steps` batches are multimodal only, then each batch mixes multimodal and WikiText samples at
`mix_ratio`. The baselines (`fp`, `qlora`, `frozen`) and ablations (`--no-warmup`, `--mm-only`) run
in the same loop on the same batches.

Artifact `R/tune/`: trainable.safetensors (scales + projector, LoRA + projector, or LM + projector),
metrics.csv, loss.png. Checkpoints live in the partial directory and are dropped once finished.
"""

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import click
import torch
from tqdm import tqdm

from qslaw_pipe.cli_common import (
    config_option,
    emit,
    force_option,
    json_option,
    model_option,
    quiet_libraries,
    run_dir_option,
    user_errors,
)
from qslaw_pipe.pipeline.artifact import StageResult, read_artifact, run_stage, stage_dir
from qslaw_pipe.pipeline.checkpoint import load_checkpoint, save_checkpoint
from qslaw_pipe.pipeline.config import config_to_dict, merge_recipe
from qslaw_pipe.pipeline.data.text import default_text_path, read_text, split_text, token_chunks
from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.hashing import sha256_path
from qslaw_pipe.pipeline.lm_loss import batch_loss
from qslaw_pipe.pipeline.loss_plot import plot_losses
from qslaw_pipe.pipeline.sysinfo import peak_rss_mb
from qslaw_pipe.pipeline.tensors import save_tensors
from qslaw_pipe.pipeline.train_sets import load_train_samples
from qslaw_pipe.pipeline.tune_data import StepSampler, collate, parse_mix
from qslaw_pipe.pipeline.tune_methods import METHODS, QUANTIZED, trainable_state
from qslaw_pipe.pipeline.tuned_model import TRAINABLE_FILE, build_method_model
from qslaw_pipe.stages.generate import resolve_model

METRICS_FILE = "metrics.csv"
CHECKPOINT = "checkpoint.safetensors"
DEFAULT_LR = {"qslaw": 5e-4, "frozen": 0.0, "fp": 2e-5, "qlora": 2e-4}


@dataclass(frozen=True)
class TuneConfig:
    """lm_lr: scales (qslaw), LM weights (fp) or LoRA (qlora); None takes the method's default."""

    method: str = "qslaw"
    data: str = "easyvqa"
    steps: int = 200
    batch_size: int = 4
    warmup_steps: int = 40
    mix_ratio: str = "1:1"
    projector_lr: float = 2e-3
    lm_lr: float | None = None
    weight_decay: float = 0.0
    text_seqlen: int = 96
    lora_rank: int = 16
    lora_alpha: int = 32
    checkpoint_every: int = 50
    seed: int = 0
    compile: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise QslawError(f"invalid --method {self.method}", f"use one of {', '.join(METHODS)}")
        if self.steps < 1 or self.batch_size < 2 or self.warmup_steps < 0 or self.checkpoint_every < 1:
            raise QslawError(
                "invalid --steps/--batch-size/--warmup-steps/--checkpoint-every",
                "steps >= 1, batch size >= 2, warmup >= 0, checkpoint-every >= 1",
            )
        if self.projector_lr <= 0 or (self.lm_lr is not None and self.lm_lr < 0) or self.text_seqlen < 8:
            raise QslawError(
                "invalid --projector-lr/--lm-lr/--text-seqlen",
                "use positive learning rates and text-seqlen >= 8",
            )
        parse_mix(self.mix_ratio)

    @property
    def resolved_lm_lr(self) -> float:
        return DEFAULT_LR[self.method] if self.lm_lr is None else self.lm_lr


def lr_factor(step: int, total: int) -> float:
    """Linear ramp over the first 3% of steps, then cosine decay to 0 (LLaVA's schedule)."""
    ramp = max(1, round(0.03 * total))
    if step < ramp:
        return (step + 1) / ramp
    return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, total - ramp)))


def _optimizer(model, cfg: TuneConfig):
    from qslaw_pipe.pipeline import modules

    projector = {id(p) for p in modules.projector(model).parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in projector], "lr": cfg.projector_lr},
        {"params": [p for p in trainable if id(p) not in projector], "lr": cfg.resolved_lm_lr},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps))


class Interrupted(Exception):
    """Raised by `interrupt_after` (tests): the run stopped after a checkpoint, as a crash would."""


def train(
    lm,
    sampler: StepSampler,
    cfg: TuneConfig,
    out: Path,
    resuming: bool,
    bar: bool = True,
    interrupt_after: int | None = None,
) -> list[dict]:
    """The training loop; returns the metric rows (step, loss, modality, lr, seconds, per-modality losses)."""
    model = lm.model
    model.train()
    opt, sched = _optimizer(model, cfg)
    start, rows = 0, []
    if resuming and (out / CHECKPOINT).is_file():
        start, rows = load_checkpoint(out / CHECKPOINT, model, opt, sched)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    progress = tqdm(
        range(start, cfg.steps), desc=f"tune {cfg.method}", initial=start, total=cfg.steps, disable=not bar
    )
    for step in progress:
        t0 = time.perf_counter()
        batch = collate(sampler.examples(step), pad)
        loss, parts = batch_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            opt.step()
        lr = opt.param_groups[-1]["lr"]
        sched.step()
        modality = "mixed" if len(parts) > 1 else next(iter(parts))
        rows.append(
            {
                "step": step,
                "loss": loss.item(),
                "modality": modality,
                "lr": lr,
                "seconds": time.perf_counter() - t0,
                "loss_multimodal": parts.get("multimodal"),
                "loss_text": parts.get("text"),
            }
        )
        progress.set_postfix(loss=f"{loss.item():.3f}", modality=modality)
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            save_checkpoint(out / CHECKPOINT, model, opt, sched, step + 1, rows)
            if interrupt_after is not None and step + 1 >= interrupt_after:
                raise Interrupted(f"stopped after step {step + 1}")
    model.eval()
    return rows


def write_metrics(path: Path, rows: list[dict]) -> None:
    fields = ["step", "loss", "modality", "lr", "seconds", "loss_multimodal", "loss_text"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def tune(
    model_dir: Path,
    run_dir: Path,
    text_path: Path,
    cfg: TuneConfig,
    out: Path,
    resuming: bool,
    bar: bool = True,
    interrupt_after: int | None = None,
) -> dict:
    """Train `cfg.method`, write trainable.safetensors, metrics.csv and loss.png into `out`; returns metrics."""
    calib = (
        read_artifact(run_dir, "calibrate", model_sha=sha256_path(model_dir))
        if cfg.method in QUANTIZED
        else None
    )
    torch.manual_seed(cfg.seed)
    lm = build_method_model(model_dir, cfg.method, calib, cfg.lora_rank, cfg.lora_alpha, cfg.compile)
    mix = parse_mix(cfg.mix_ratio)
    chunks = (
        token_chunks(lm.tokenizer, split_text(read_text(text_path), "calib"), cfg.text_seqlen, 4096)
        if mix[1]
        else []
    )
    sampler = StepSampler(
        lm.processor,
        load_train_samples(cfg.data, cfg.seed),
        chunks,
        cfg.batch_size,
        cfg.warmup_steps,
        mix,
        cfg.seed,
    )
    rows = train(lm, sampler, cfg, out, resuming, bar, interrupt_after)
    state = trainable_state(lm.model)
    save_tensors(out / TRAINABLE_FILE, state, {"method": cfg.method, "tensors": len(state)})
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
    }


def run(
    cfg: TuneConfig,
    run_dir: Path,
    model_dir: Path,
    text_path: Path,
    force: bool = False,
    bar: bool = True,
    interrupt_after: int | None = None,
) -> StageResult:
    inputs = {"model": model_dir, "text": text_path}
    if cfg.method in QUANTIZED:
        read_artifact(run_dir, "calibrate")  # one-line error when it is missing
        inputs["calibrate"] = stage_dir(run_dir, "calibrate")
    return run_stage(
        run_dir,
        "tune",
        config_to_dict(cfg),
        inputs,
        lambda out, resuming: tune(model_dir, run_dir, text_path, cfg, out, resuming, bar, interrupt_after),
        force=force,
    )


@click.command("tune")
@run_dir_option
@model_option
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=None,
    help="qslaw: learn group scales + projector; fp: full LM + projector; qlora: NF4 + LoRA + projector; "
    "frozen: projector only on the quantized LM.  [default: qslaw]",
)
@click.option(
    "--data",
    default=None,
    help="Multimodal training set: easyvqa, or a ScienceQA / LLaVA-JSON path.  [default: easyvqa]",
)
@click.option("--steps", type=int, default=None, help="Optimizer steps.  [default: 200]")
@click.option("--batch-size", type=int, default=None, help="Samples per step.  [default: 4]")
@click.option(
    "--warmup-steps", type=int, default=None, help="Multimodal-only steps at the start (eta).  [default: 40]"
)
@click.option("--no-warmup", is_flag=True, help="Ablation: mix text in from step 0 (--warmup-steps 0).")
@click.option(
    "--mix-ratio", default=None, help="Multimodal:text samples per batch after warmup.  [default: 1:1]"
)
@click.option("--mm-only", is_flag=True, help="Ablation: no text samples (--mix-ratio 1:0).")
@click.option("--projector-lr", type=float, default=None, help="[default: 2e-3]")
@click.option(
    "--lm-lr",
    type=float,
    default=None,
    help="Learning rate of scales / LM weights / LoRA.  [default: 5e-4 / 2e-5 / 2e-4]",
)
@click.option(
    "--text-seqlen",
    type=int,
    default=None,
    help="Tokens per WikiText sample (about a multimodal sample's length).  [default: 96]",
)
@click.option("--lora-rank", type=int, default=None, help="[default: 16]")
@click.option(
    "--checkpoint-every", type=int, default=None, help="Steps between resume checkpoints.  [default: 50]"
)
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option(
    "--compile/--no-compile",
    default=None,
    help="Fuse QSLAW's fake quantization with torch.compile (needs a C++ compiler).  [default: compile]",
)
@click.option(
    "--text",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Raw text corpus (first half used). Default: WikiText-2 test ($QSLAW_TEXT).",
)
@config_option
@force_option
@json_option
@user_errors
def command(run_dir, model, recipe, force, as_json, text, no_warmup, mm_only, **flags) -> None:
    """Instruction-tune RUN_DIR's quantized model (or a baseline) on image QA -> RUN_DIR/tune/."""
    quiet_libraries()
    if no_warmup:
        flags["warmup_steps"] = 0
    if mm_only:
        flags["mix_ratio"] = "1:0"
    cfg = merge_recipe(TuneConfig, recipe, flags)
    result = run(cfg, run_dir, resolve_model(model), text or default_text_path(), force)
    m = result.artifact.metrics
    human = (
        f"{'reused' if result.reused else 'wrote'} {result.artifact.path} ({cfg.method}, {m['steps']} steps, "
        f"{m['trainable_params']:,} trained values)\n  final loss {m['final_loss']:.3f}, "
        f"{m['mean_step_s']:.2f} s/step, peak RSS {m['peak_rss_mb_train']:.0f} MB\n  loss curve: {result.artifact.path / 'loss.png'}"
    )
    emit({"artifact": str(result.artifact.path), "reused": result.reused, **m}, as_json, human)
