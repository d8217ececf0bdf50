"""OmniQuant initialisation of the LM's int-k weights (Shao et al., ICLR 2024).

Weight-only (W-bit, A16). Block by block: capture each decoder block's inputs from the already
quantized earlier blocks, train per-group clipping (kernels/lwc.py) with AdamW to minimise the MSE
between the full-precision block's output (on full-precision inputs) and the fake-quantized block's
output, then freeze.

Resume: after every block its qparams and both activation caches go to `resume/` in the partial
directory; an interrupted run continues at the first unfinished block and ends with the same tensors.

Under torchrun the calibration samples are split over the ranks (sample i on rank i mod N): each rank
captures and carries only its share of the activations, every step draws the same global minibatch, each
rank's loss is its share of the global MSE, and the clipping gradients are summed over the ranks before
AdamW, so every rank holds the single-process clipping. Each rank keeps its own activation cache for resume
(`state-<rank>-of-<N>`): an interrupted run resumes with the same number of processes.
"""

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call
from tqdm import tqdm

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.lwc import ClippedQuantizer
from qslaw_pipe.kernels.quant import fake_quant
from qslaw_pipe.pipeline import distributed, modules
from qslaw_pipe.pipeline.device import Compute, resolve
from qslaw_pipe.pipeline.qparams import WEIGHT, Calibration, LayerQParams
from qslaw_pipe.pipeline.tensors import DamagedFile, load_tensors, save_tensors
from qslaw_pipe.stages.calibrate.batches import calibration_batches
from qslaw_pipe.stages.calibrate.capture import capture_block_inputs, run_block
from qslaw_pipe.stages.calibrate.config import CalibrateConfig, layer_group_size


def adamw(params, lr: float, steps: int):
    """OmniQuant's optimizer: AdamW at a constant rate, no weight decay."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0), None


@dataclass(frozen=True)
class Tuning:
    """What a block learns and how. quantizer(weight, bits, group_size): a module whose forward fake-quantizes
    the weight, with qparams(ste), project_() (after each step) and export(weight) (the tensors the artifact
    keeps: delta, zero_point, any extras, and `weight` when the codes round from an adjusted weight);
    optimizer(params, lr, steps) -> (optimizer, scheduler or None); keep_best: end on the parameters of the
    lowest minibatch loss seen rather than the last."""

    quantizer: Callable
    optimizer: Callable
    keep_best: bool = False


OMNIQUANT = Tuning(ClippedQuantizer, adamw)


def _squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum()


def _local_rows(idx: torch.Tensor) -> torch.Tensor:
    """This rank's rows of global sample indices `idx` (global sample g lives on rank g mod N, row g // N)."""
    mine = idx[idx % distributed.world() == distributed.rank()]
    return mine // distributed.world()


def _move(obj, device: torch.device):
    """Tensors (also inside tuples, lists and dicts: the block's keyword arguments) on `device`."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple | list):
        return type(obj)(_move(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    return obj


def _host(t: torch.Tensor, compute: Compute) -> torch.Tensor:
    """A block's activations back in host memory (pinned when they feed a GPU)."""
    t = t.detach().float().cpu()
    return t.pin_memory() if compute.cuda else t


def _batches(n: int, bs: int) -> list[slice]:
    return [slice(i, i + bs) for i in range(0, n, bs)]


def calibrate_block(
    block,
    local_names: list[str],
    fp_in,
    q_in,
    kwargs,
    cfg: CalibrateConfig,
    index: int,
    bar: bool = True,
    compute: Compute | None = None,
    tuning: Tuning = OMNIQUANT,
):
    """Train the block's quantizers (`tuning`: OmniQuant's clipping by default). Returns ({name: exported
    tensors}, fp_out, q_out, losses).
    The block computes on `compute`'s device (in its autocast); activations stay in host memory and
    move there one batch at a time, so only one block and one batch occupy the GPU."""
    compute = compute or resolve("cpu", "fp32")
    dev, bs = compute.device, cfg.batch_size
    block.to(dev)
    kwargs = _move(kwargs, dev)
    linears = {n: block.get_submodule(n) for n in local_names}
    quantizers = {
        n: tuning.quantizer(m.weight, cfg.bits, layer_group_size(cfg, m.in_features))
        for n, m in linears.items()
    }

    def q_forward(x, final=None):
        weights = {
            f"{n}.weight": (final[n] if final else quantizers[n](m.weight)) for n, m in linears.items()
        }
        with compute.autocast():
            return functional_call(block, weights, (x.to(dev, non_blocking=True),), kwargs)

    n_global = int(distributed.sum_all([float(len(q_in))])[0])
    row_size = q_in[0].numel()

    def loss_of(fn, inputs, targets, rows, n_rows: int) -> torch.Tensor:
        """This rank's share of the MSE over a global minibatch of `n_rows` samples."""
        if torch.is_tensor(rows) and rows.numel() == 0:
            return torch.zeros((), device=dev)
        error = _squared_error(fn(inputs[rows]).float(), targets[rows].to(dev, non_blocking=True))
        return error / (n_rows * row_size)

    def mean_loss(fn, inputs, targets) -> float:
        with torch.no_grad():
            mine = sum(loss_of(fn, inputs, targets, b, n_global).item() for b in _batches(len(inputs), bs))
        return distributed.sum_all([mine])[0]

    with torch.no_grad(), compute.autocast():
        fp_out = _host(
            torch.cat([run_block(block, fp_in[b].to(dev), kwargs) for b in _batches(len(fp_in), bs)]), compute
        )
    before = mean_loss(q_forward, q_in, fp_out)
    params = [p for q in quantizers.values() for p in q.parameters()]
    steps = range(cfg.epochs * ((n_global + bs - 1) // bs))
    opt, schedule = tuning.optimizer(params, cfg.lr, len(steps))
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + index)
    progress = tqdm(steps, desc=f"block {index:2d}", leave=False, disable=not bar)
    order, best, kept = iter(()), math.inf, None
    for _ in progress:
        idx = next(order, None)
        if idx is None:
            order = iter(torch.randperm(n_global, generator=gen).split(bs))
            idx = next(order)
        loss = loss_of(q_forward, q_in, fp_out, _local_rows(idx), len(idx))
        try:
            value = distributed.sum_all([loss.item()])[0]
        except RuntimeError as e:
            if not distributed.comm_failure(e):
                raise
            raise distributed.lost_peers(e, f"block {index}") from e
        if not torch.isfinite(torch.tensor(value)):
            raise QslawError(
                f"calibration diverged: block {index}'s loss is {value} (earlier blocks are kept for resume)",
                "lower --lr and run again",
            )
        if tuning.keep_best and value < best:  # the parameters that gave this loss, before the step
            best, kept = value, [p.detach().clone() for p in params]
        opt.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        distributed.sum_grads(params)
        opt.step()
        if schedule is not None:
            schedule.step()
        for q in quantizers.values():
            q.project_()
        progress.set_postfix(loss=f"{value:.3e}")
    with torch.no_grad():
        for p, k in zip(params, kept or [], strict=False):
            p.copy_(k)
        qparams = {n: q.export(linears[n].weight) for n, q in quantizers.items()}
        final = {
            n: fake_quant(
                e[WEIGHT].to(dev, torch.float32) if WEIGHT in e else linears[n].weight,
                e["delta"].to(dev),
                e["zero_point"].to(dev),
                cfg.bits,
                quantizers[n].group_size,
            )
            for n, e in qparams.items()
        }
        after = mean_loss(lambda x: q_forward(x, final), q_in, fp_out)
        q_out = _host(torch.cat([q_forward(q_in[b], final) for b in _batches(len(q_in), bs)]), compute)
    block.to("cpu")
    return qparams, fp_out, q_out, {"block": index, "loss_before": before, "loss_after": after}


class Span(torch.nn.Module):
    """Consecutive decoder layers run as one block (what qvlm reconstructs jointly)."""

    def __init__(self, layers: list[torch.nn.Module]):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, hidden, **kwargs):
        for layer in self.layers:
            hidden = run_block(layer, hidden, kwargs)
        return hidden


def omniquant(
    lm,
    targets: list[str],
    cfg: CalibrateConfig,
    text_path: Path,
    resume_dir: Path,
    bar: bool = True,
    compute: Compute | None = None,
    spans: list[tuple[int, int]] | None = None,
    batches: list[dict] | None = None,
    tuning: Tuning = OMNIQUANT,
):
    """Block-wise OmniQuant (or another `tuning`); returns ({layer: {key: tensor}}, per-block losses). The model
    stays in host memory; each block visits `compute`'s device in turn. `spans` [(first, end), ...]: the
    blocks, each a run of consecutive decoder layers reconstructed jointly (default: one layer each)."""
    compute = compute or resolve("cpu", "fp32")
    layers = modules.decoder_layers(lm.model)
    prefix = modules.module_name(lm.model, layers)
    spans = spans or [(i, i + 1) for i in range(len(layers))]
    resume_dir.mkdir(exist_ok=True)
    state_path = resume_dir / (
        f"state-{distributed.rank()}-of-{distributed.world()}.safetensors"
        if distributed.active()
        else "state.safetensors"
    )
    torch.manual_seed(cfg.seed)
    batches = distributed.shard(batches or calibration_batches(lm, cfg, text_path))
    _check_resumable(resume_dir, state_path)
    _drop_damaged(resume_dir, state_path)
    if state_path.is_file():
        _, kwargs = capture_block_inputs(lm.model, batches[:1])
        state, header = load_tensors(state_path)
        fp_in, q_in, start = state["fp_in"], state["q_in"], header["next_block"]
        distributed.agree("resume point", start, "pass --force to start the calibration over")
    else:
        fp_in, kwargs = capture_block_inputs(lm.model, batches)
        q_in, start = fp_in.clone(), 0
    if compute.cuda:
        fp_in, q_in = fp_in.pin_memory(), q_in.pin_memory()
    results, losses = {}, []
    for i, (first, end) in enumerate(spans):
        block_file = resume_dir / f"block_{i:03d}.safetensors"
        block = layers[first] if end == first + 1 else Span(list(layers[first:end]))
        names = {  # the targets in this block, by their name inside `block`
            f"{j - first}.{t[len(f'{prefix}.{j}.') :]}" if end > first + 1 else t[len(f"{prefix}.{j}.") :]: t
            for j in range(first, end)
            for t in targets
            if t.startswith(f"{prefix}.{j}.")
        }
        if end > first + 1:
            names = {f"layers.{k}": v for k, v in names.items()}
        local = list(names)
        if i < start:
            saved, header = load_tensors(block_file)
            losses.append(header["losses"])
        else:
            block.requires_grad_(False)
            qp, fp_in, q_in, loss = calibrate_block(
                block, local, fp_in, q_in, kwargs, cfg, i, bar, compute=compute, tuning=tuning
            )
            loss = {**loss, "layers": [first, end]}
            saved = {f"{n}.{k}": t for n, ts in qp.items() for k, t in ts.items()}
            if distributed.is_main():
                save_tensors(block_file, saved, {"losses": loss})
            save_tensors(state_path, {"fp_in": fp_in, "q_in": q_in}, {"next_block": i + 1})
            distributed.barrier()  # every rank's cache is at block i + 1 before the next block starts
            losses.append(loss)
        for n in local:
            results[names[n]] = {
                k[len(n) + 1 :]: t
                for k, t in saved.items()
                if k.startswith(f"{n}.") and "." not in k[len(n) + 1 :]
            }
    distributed.barrier()  # no rank still writes resume/ when rank 0 removes it
    return results, losses


def _drop_damaged(resume_dir: Path, state_path: Path) -> None:
    """Resume only from files that read back as written: a damaged state or block file (a flipped byte, a
    truncated write) means this rank starts the calibration over, with a one-line note."""
    if not state_path.is_file():
        return
    try:
        _, header = load_tensors(state_path)
        for i in range(header["next_block"]):
            load_tensors(resume_dir / f"block_{i:03d}.safetensors")
    except (DamagedFile, FileNotFoundError, KeyError) as e:
        problem = e.problem if isinstance(e, DamagedFile) else f"{e} is missing"
        print(f"note: {problem}; calibrating from the first block", file=sys.stderr)
        state_path.unlink()


def _check_resumable(resume_dir: Path, state_path: Path) -> None:
    """A run interrupted at another number of processes cannot resume here: its caches are split otherwise."""
    states = sorted(p.name for p in resume_dir.glob("state*.safetensors"))
    if states and state_path.name not in states:
        raise QslawError(
            f"{resume_dir} holds an interrupted calibration of another number of processes ({states[0]})",
            "resume with that number of processes (--nproc), or pass --force to start over",
        )


def as_calibration(results: dict, group_sizes: dict, cfg, method: str) -> Calibration:
    """The record of block-wise results {layer: {"delta", "zero_point", extras..., maybe "weight"}}."""
    layers, weights = {}, {}
    for t, own in results.items():
        own = dict(own)
        if WEIGHT in own:
            weights[t] = own.pop(WEIGHT)
        delta, zp = own.pop("delta"), own.pop("zero_point")
        layers[t] = LayerQParams(delta, zp, cfg.bits, group_sizes[t], own)
    return Calibration(layers, method, cfg.bits, weights)


def calibrate(lm, targets, group_sizes, cfg, text_path, out, bar=True, compute=None):
    results, losses = omniquant(lm, targets, cfg, text_path, out / "resume", bar, compute)
    return as_calibration(results, group_sizes, cfg, "omniquant"), {"blocks": losses}
