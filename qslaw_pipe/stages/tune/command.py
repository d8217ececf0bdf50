"""`qslaw-pipe tune`: flags -> TuneConfig -> stage.run."""

import click

from qslaw_pipe import cli_common as cli
from qslaw_pipe.paths import default_text_path, resolve_model
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.pipeline.methods import METHODS
from qslaw_pipe.stages.tune.config import BACKWARD_WEIGHTS, DEFAULT_LR, TuneConfig

C = TuneConfig
LM_LR = " / ".join(f"{m} {lr:g}" for m, lr in DEFAULT_LR.items())


@click.command("tune")
@cli.run_dir_option
@cli.model_option
@cli.field_option(
    C,
    "method",
    "; ".join(f"{m.name}: {m.help}" for m in METHODS.values()) + ".",
    type=click.Choice(list(METHODS)),
)
@cli.field_option(C, "data", "Multimodal training set: easyvqa, or a ScienceQA / LLaVA-JSON path.")
@cli.field_option(
    C,
    "image_folder",
    "Root of a LLaVA-JSON set's images (default: the JSON's folder); paths may not leave it.",
)
@cli.field_option(C, "steps", "Optimizer steps.")
@cli.field_option(C, "batch_size", "Samples per step.")
@cli.field_option(C, "warmup_steps", "Multimodal-only steps at the start (eta).")
@click.option("--no-warmup", is_flag=True, help="Ablation: mix text in from step 0 (--warmup-steps 0).")
@cli.field_option(C, "mix_ratio", "Multimodal:text samples per batch after warmup.")
@click.option("--mm-only", is_flag=True, help="Ablation: no text samples (--mix-ratio 1:0).")
@cli.field_option(C, "projector_lr", "AdamW learning rate of the projector.")
@cli.field_option(
    C, "lm_lr", f"Learning rate of scales / LM weights / LoRA. Unset: by method ({LM_LR}).", type=float
)
@cli.field_option(C, "weight_decay", "AdamW weight decay (both groups).")
@cli.field_option(C, "text_seqlen", "Tokens per WikiText sample (about a multimodal sample's length).")
@cli.field_option(C, "lora_rank", "LoRA rank (qlora).")
@cli.field_option(C, "lora_alpha", "LoRA alpha (qlora).")
@cli.field_option(C, "checkpoint_every", "Steps between resume checkpoints.")
@cli.field_option(C, "seed", "Seed of the batch order and initialisation.")
@cli.field_option(C, "compile", "Fuse QSLAW's fake quantization with torch.compile (needs a C++ compiler).")
@cli.field_option(
    C, "grad_checkpoint", "Recompute each decoder layer's activations in backward (less memory)."
)
@cli.field_option(
    C,
    "backward_weights",
    "Quantized weights in backward: keep (saved from forward: faster, two weight-sized tensors per layer "
    "held during a step), rebuild (recomputed: least memory), auto (keep on the CPU, rebuild on CUDA).",
    type=click.Choice(BACKWARD_WEIGHTS),
)
@cli.field_option(
    C,
    "shard",
    "With --nproc: FSDP2, every decoder layer's weights (frozen ones too), gradients and optimizer state split "
    "over the processes (for models that do not fit one device); without it each process holds the model.",
)
@cli.compute_options(C)
@cli.nproc_option
@cli.text_option
@cli.stage_options
def command(run_dir, model, recipe, force, as_json, text, no_warmup, mm_only, nproc, **flags) -> None:
    """Instruction-tune RUN_DIR's quantized model (or a baseline) on image QA -> RUN_DIR/tune/.

    Data parallel: `qslaw-pipe tune --nproc N ...`, or `torchrun --nproc-per-node N -m qslaw_pipe tune ...`."""
    cli.relaunch_under_torchrun(nproc)
    cli.quiet_libraries()
    from qslaw_pipe.stages.tune.stage import run

    if no_warmup:
        flags["warmup_steps"] = 0
    if mm_only:
        flags["mix_ratio"] = "1:0"
    cfg = merge_recipe(TuneConfig, recipe, flags)
    result = run(cfg, run_dir, resolve_model(model), text or default_text_path(), force)
    if result is None:  # a rank other than 0: rank 0 reports
        return
    m = result.artifact.metrics
    what = f"{cfg.method}, {m['steps']} steps, {m['trainable_params']:,} trained values"
    details = (
        f"\n  final loss {m['final_loss']:.3f}, {m['mean_step_s']:.2f} s/step, peak RSS "
        f"{m['peak_rss_mb_train']:.0f} MB\n  loss curve: {result.artifact.path / 'loss.png'}"
    )
    cli.report(result, as_json, what, details)
