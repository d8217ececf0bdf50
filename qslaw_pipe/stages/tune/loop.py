"""The training loop every tuning method shares: AdamW over the trainable tensors (projector and LM
groups), LLaVA's warmup-cosine schedule, per-step batches from the sampler, resume checkpoints.

Under torchrun the loop is data parallel (DistributedDataParallel): every rank draws the same global batch
of step t, computes the loss of its share (examples rank, rank + N, ...) normalized by the whole batch, and
DDP all-reduces the trainable tensors' gradients, so each step equals the single-process one in any world
size. Frozen weights and buffers are never broadcast; a rank whose share holds no image leaves the
projector unused for that step, which DDP's unused-parameter search covers. Rank 0 writes checkpoints."""

import contextlib
import csv
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline import distributed, modules
from qslaw_pipe.pipeline.device import Compute, to_device
from qslaw_pipe.pipeline.tensors import DamagedFile
from qslaw_pipe.stages.tune.batches import StepSampler, collate
from qslaw_pipe.stages.tune.checkpoint import load_checkpoint, save_checkpoint
from qslaw_pipe.stages.tune.config import TuneConfig
from qslaw_pipe.stages.tune.loss import LossModule, batch_loss

CHECKPOINT = "checkpoint.safetensors"


def lr_factor(step: int, total: int) -> float:
    """Linear ramp over the first 3% of steps, then cosine decay to 0 (LLaVA's schedule)."""
    ramp = max(1, round(0.03 * total))
    if step < ramp:
        return (step + 1) / ramp
    return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, total - ramp)))


def optimizer(model, cfg: TuneConfig, fused: bool = True):
    """AdamW over the trainable tensors (projector group, LM group) and LLaVA's schedule; `fused`: one
    kernel over all tensors instead of a loop of elementwise ops per tensor (the same update)."""
    projector = {id(p) for p in modules.projector_parameters(model).values()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in projector], "lr": cfg.projector_lr},
        {"params": [p for p in trainable if id(p) not in projector], "lr": cfg.resolved_lm_lr},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay, fused=fused)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps))


def train_step(
    model, opt, batch: dict, compute: Compute | None = None, ddp=None
) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimizer step on `batch` (batches.collate); returns (loss, per-modality mean losses).
    With `compute`, the batch moves to its device and the forward runs under its autocast. With `ddp`
    (data_parallel) the loss is this rank's share and the gradients are summed over the ranks."""
    if compute is not None:
        batch = to_device(batch, compute.device)
    with compute.autocast() if compute is not None else contextlib.nullcontext():
        loss, parts = ddp(batch) if ddp is not None else batch_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    if loss.requires_grad:
        (loss * distributed.world() if ddp is not None else loss).backward()  # DDP averages; shares sum
        opt.step()
    return loss, parts


def data_parallel(model):
    """`model`'s batch loss under DistributedDataParallel (None in a single process): only trainable
    tensors are synchronized, never the frozen weights and buffers."""
    if not distributed.active():
        return None
    from torch.nn.parallel import DistributedDataParallel

    wrapped = LossModule(model)
    frozen = [n for n, p in wrapped.named_parameters() if not p.requires_grad]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        wrapped, frozen + [n for n, _ in wrapped.named_buffers()]
    )
    return DistributedDataParallel(wrapped, find_unused_parameters=True, broadcast_buffers=False)


def fully_sharded(model):
    """FSDP2 (`--shard`): every decoder layer's parameters (frozen ones too), gradients and optimizer state
    split over the ranks, gathered layer by layer in forward and backward; returns the module whose forward
    is the batch loss (gradients reduce-scattered as DDP's are all-reduced: averaged over the ranks)."""
    from torch.distributed.fsdp import fully_shard

    for layer in modules.decoder_layers(model):
        fully_shard(layer)
    return fully_shard(LossModule(model, touch_projector=True))


def global_losses(loss: torch.Tensor, parts: dict[str, float], ddp) -> tuple[float, dict[str, float]]:
    """The whole batch's loss and per-modality means: this rank's shares summed over the ranks."""
    if ddp is None:
        return loss.item(), parts
    names = ("multimodal", "text")
    summed = distributed.sum_all(
        [loss.item(), *(parts.get(n, 0.0) for n in names), *(float(n in parts) for n in names)]
    )
    return summed[0], {n: v for n, v, k in zip(names, summed[1:3], summed[3:5], strict=True) if k}


def train(
    lm,
    sampler: StepSampler,
    cfg: TuneConfig,
    out: Path,
    resuming: bool,
    bar: bool = True,
    compute: Compute | None = None,
) -> list[dict]:
    """The training loop; returns the metric rows (step, loss, modality, lr, seconds, per-modality losses)."""
    model = lm.model
    model.train()
    ddp = fully_sharded(model) if cfg.shard else None  # before the optimizer: it holds the shards
    opt, sched = optimizer(model, cfg, fused=not cfg.shard)
    start, rows = 0, []
    if resuming and (out / CHECKPOINT).is_file():
        try:
            start, rows = load_checkpoint(out / CHECKPOINT, model, opt, sched)
        except DamagedFile as e:  # checked before anything is restored: the run starts over intact
            if distributed.is_main():
                print(f"note: {e.problem}; tuning from the first step", file=sys.stderr)
    ddp = ddp or data_parallel(model)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    progress = tqdm(
        range(start, cfg.steps),
        desc=f"tune {cfg.method}",
        initial=start,
        total=cfg.steps,
        disable=not bar or not distributed.is_main(),
    )
    for step in progress:
        t0 = time.perf_counter()
        examples = sampler.examples(step)
        batch = collate(distributed.shard(examples), pad, whole=examples)
        try:
            value, parts = global_losses(*train_step(model, opt, batch, compute, ddp), ddp)
        except RuntimeError as e:
            if not distributed.comm_failure(e):
                raise
            raise distributed.lost_peers(e, f"step {step}") from e
        loss = torch.tensor(value)
        if not torch.isfinite(loss):
            kept = (
                f"the checkpoint of step {step - step % cfg.checkpoint_every} is kept"
                if step >= cfg.checkpoint_every
                else "nothing was checkpointed yet"
            )
            raise QslawError(
                f"tune diverged: the loss is {loss.item()} at step {step} ({kept})",
                "lower --lm-lr / --projector-lr and run again (it resumes from the checkpoint)",
            )
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
            save_checkpoint(out / CHECKPOINT, model, opt, sched, step + 1, rows, write=distributed.is_main())
    model.eval()
    return rows


def write_metrics(path: Path, rows: list[dict]) -> None:
    fields = ["step", "loss", "modality", "lr", "seconds", "loss_multimodal", "loss_text"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
