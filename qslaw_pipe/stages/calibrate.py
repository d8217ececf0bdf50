"""Stage `calibrate`: OmniQuant initialisation of the LM's int-k weights (Shao et al., ICLR 2024).

Weight-only (W-bit, A16). Block by block: capture each decoder block's inputs from the already
quantized earlier blocks, train per-group clipping (kernels/lwc.py) with AdamW to minimise the MSE
between the full-precision block's output (on full-precision inputs) and the fake-quantized block's
output, then freeze. `rtn` is min-max round-to-nearest in the same artifact format.

Resume: after every block its qparams and both activation caches go to `resume/` in the partial
directory; an interrupted run continues at the first unfinished block and ends with the same tensors.
"""

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import torch
from torch.func import functional_call
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
from qslaw_pipe.kernels.lwc import ClippedQuantizer
from qslaw_pipe.kernels.quant import fake_quant, rtn_qparams
from qslaw_pipe.pipeline import modules
from qslaw_pipe.pipeline.artifact import StageResult, run_stage
from qslaw_pipe.pipeline.calib_data import hybrid_batches, text_batches
from qslaw_pipe.pipeline.capture import capture_block_inputs, run_block
from qslaw_pipe.pipeline.config import config_to_dict, merge_recipe
from qslaw_pipe.pipeline.data.text import default_text_path, read_text, split_text
from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import QPARAMS_FILE
from qslaw_pipe.pipeline.targeting import parse_rule, quantized_names, resolve_targets
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors
from qslaw_pipe.stages.generate import resolve_model

BITS = (2, 3, 4, 8)
GROUPS = (32, 64, 128, -1)
METHODS = ("omniquant", "rtn")
CALIBS = ("text", "hybrid")


@dataclass(frozen=True)
class CalibrateConfig:
    """group_size -1 means per-channel (one group spanning all inputs)."""

    bits: int = 4
    group_size: int = 128
    method: str = "omniquant"
    calib: str = "text"
    nsamples: int = 32
    seqlen: int = 512
    epochs: int = 3
    lr: float = 0.5
    batch_size: int = 4
    seed: int = 0
    rules: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        checks = [
            (self.bits in BITS, f"--bits {self.bits}", f"use one of {BITS}"),
            (self.group_size in GROUPS, f"--group-size {self.group_size}", "use 32, 64, 128 or per-channel"),
            (self.method in METHODS, f"--method {self.method}", f"use one of {METHODS}"),
            (self.calib in CALIBS, f"--calib {self.calib}", f"use one of {CALIBS}"),
            (
                self.nsamples > 0 and self.seqlen > 1 and self.epochs >= 0,
                "--nsamples/--seqlen/--epochs",
                "use positive values",
            ),
            (self.lr > 0 and self.batch_size > 0, "--lr/--batch-size", "use positive values"),
        ]
        for ok, what, fix in checks:
            if not ok:
                raise QslawError(f"invalid {what}", fix)
        for rule in self.rules:
            parse_rule(rule)


def layer_group_size(cfg: CalibrateConfig, in_features: int) -> int:
    return in_features if cfg.group_size == -1 else cfg.group_size


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(a, b)


def _batched_loss(fn, q_in, fp_out, bs) -> float:
    with torch.no_grad():
        total = sum(
            _mse(fn(q_in[i : i + bs]), fp_out[i : i + bs]).item() * len(q_in[i : i + bs])
            for i in range(0, len(q_in), bs)
        )
    return total / len(q_in)


def calibrate_block(
    block, local_names: list[str], fp_in, q_in, kwargs, cfg: CalibrateConfig, index: int, bar: bool = True
):
    """Train clipping for the block's quantized Linears. Returns (qparams, fp_out, q_out, losses)."""
    linears = {n: block.get_submodule(n) for n in local_names}
    quantizers = {
        n: ClippedQuantizer(m.weight, cfg.bits, layer_group_size(cfg, m.in_features))
        for n, m in linears.items()
    }
    with torch.no_grad():
        fp_out = torch.cat(
            [
                run_block(block, fp_in[i : i + cfg.batch_size], kwargs)
                for i in range(0, len(fp_in), cfg.batch_size)
            ]
        )

    def q_forward(x, final=None):
        weights = {
            f"{n}.weight": (final[n] if final else quantizers[n](m.weight)) for n, m in linears.items()
        }
        return functional_call(block, weights, (x,), kwargs)

    before = _batched_loss(q_forward, q_in, fp_out, cfg.batch_size)
    params = [p for q in quantizers.values() for p in q.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + index)
    steps = range(cfg.epochs * ((len(q_in) + cfg.batch_size - 1) // cfg.batch_size))
    progress = tqdm(steps, desc=f"block {index:2d}", leave=False, disable=not bar)
    order = iter(())
    for _ in progress:
        idx = next(order, None)
        if idx is None:
            order = iter(torch.randperm(len(q_in), generator=gen).split(cfg.batch_size))
            idx = next(order)
        loss = _mse(q_forward(q_in[idx]), fp_out[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        progress.set_postfix(loss=f"{loss.item():.3e}")
    qparams = {}
    with torch.no_grad():
        for n, q in quantizers.items():
            delta, zp = q.qparams(ste=False)
            qparams[n] = (
                delta.detach().clone(),
                zp.to(torch.uint8),
                q.upper.detach().clone(),
                q.lower.detach().clone(),
            )
        final = {
            n: fake_quant(linears[n].weight, d, z, cfg.bits, quantizers[n].group_size)
            for n, (d, z, _, _) in qparams.items()
        }
        after = _batched_loss(lambda x: q_forward(x, final), q_in, fp_out, cfg.batch_size)
        q_out = torch.cat(
            [q_forward(q_in[i : i + cfg.batch_size], final) for i in range(0, len(q_in), cfg.batch_size)]
        )
    return qparams, fp_out, q_out, {"block": index, "loss_before": before, "loss_after": after}


def _save_atomic(path: Path, tensors: dict, header: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_tensors(tmp, tensors, header)
    tmp.rename(path)


def _calibration_batches(lm, cfg: CalibrateConfig, text_path: Path) -> list[dict]:
    text = split_text(read_text(text_path), "calib")
    if cfg.calib == "text":
        return text_batches(lm.tokenizer, text, cfg.nsamples, cfg.seqlen)
    from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa

    return hybrid_batches(lm, text, load_easyvqa("train", cfg.seed), cfg.nsamples, cfg.seqlen)


def omniquant(
    lm, targets: list[str], cfg: CalibrateConfig, text_path: Path, resume_dir: Path, bar: bool = True
):
    """Block-wise OmniQuant; returns ({layer: (delta, zp, upper, lower)}, per-block losses)."""
    layers = modules.decoder_layers(lm.model)
    prefix = modules.module_name(lm.model, layers)
    resume_dir.mkdir(exist_ok=True)
    state_path = resume_dir / "state.safetensors"
    torch.manual_seed(cfg.seed)
    batches = _calibration_batches(lm, cfg, text_path)
    if state_path.is_file():
        _, kwargs = capture_block_inputs(lm.model, batches[:1])
        state, header = load_tensors(state_path)
        fp_in, q_in, start = state["fp_in"], state["q_in"], header["next_block"]
    else:
        fp_in, kwargs = capture_block_inputs(lm.model, batches)
        q_in, start = fp_in.clone(), 0
    results, losses = {}, []
    for i in range(len(layers)):
        block_file = resume_dir / f"block_{i:03d}.safetensors"
        local = [t[len(f"{prefix}.{i}.") :] for t in targets if t.startswith(f"{prefix}.{i}.")]
        if i < start:
            saved, header = load_tensors(block_file)
            losses.append(header["losses"])
        else:
            layers[i].requires_grad_(False)
            qp, fp_in, q_in, loss = calibrate_block(layers[i], local, fp_in, q_in, kwargs, cfg, i, bar)
            saved = {
                f"{n}.{k}": t
                for n, ts in qp.items()
                for k, t in zip(("delta", "zero_point", "lwc_upper", "lwc_lower"), ts, strict=True)
            }
            _save_atomic(block_file, saved, {"losses": loss})
            _save_atomic(state_path, {"fp_in": fp_in, "q_in": q_in}, {"next_block": i + 1})
            losses.append(loss)
        for n in local:
            results[f"{prefix}.{i}.{n}"] = tuple(
                saved[f"{n}.{k}"] for k in ("delta", "zero_point", "lwc_upper", "lwc_lower")
            )
    return results, losses


def calibrate(model_dir: Path, text_path: Path, cfg: CalibrateConfig, out: Path, bar: bool = True) -> dict:
    """Compute qparams for every targeted Linear and write `out/qparams.safetensors`; returns metrics."""
    start = time.perf_counter()
    lm = load_model(model_dir)
    decisions = resolve_targets(lm.model, [parse_rule(r) for r in cfg.rules])
    targets = quantized_names(decisions)
    if not targets:
        raise QslawError("the targeting rules select no Linear layer", "check --rule patterns")
    named = dict(lm.model.named_modules())
    group_sizes = {t: layer_group_size(cfg, named[t].in_features) for t in targets}
    tensors, losses = {}, []
    if cfg.method == "rtn":
        for t in targets:
            tensors[f"{t}.delta"], tensors[f"{t}.zero_point"] = rtn_qparams(
                named[t].weight.detach(), cfg.bits, group_sizes[t]
            )
    else:
        results, losses = omniquant(lm, targets, cfg, text_path, out / "resume", bar)
        for t, (d, z, up, lo) in results.items():
            tensors.update(
                {f"{t}.delta": d, f"{t}.zero_point": z, f"{t}.lwc_upper": up, f"{t}.lwc_lower": lo}
            )
    header = {
        "bits": cfg.bits,
        "group_sizes": group_sizes,
        "method": cfg.method,
        "layout": "delta,zero_point [out, n_groups]",
    }
    save_tensors(out / QPARAMS_FILE, tensors, header)
    (out / "targets.json").write_text(json.dumps(decisions, indent=1))
    if (out / "resume").exists():
        shutil.rmtree(out / "resume")
    return {"layers": len(targets), "blocks": losses, "calibration_s": round(time.perf_counter() - start, 2)}


def run(
    cfg: CalibrateConfig,
    run_dir: Path,
    model_dir: Path,
    text_path: Path,
    force: bool = False,
    bar: bool = True,
) -> StageResult:
    inputs = {"model": model_dir, "text": text_path}
    return run_stage(
        run_dir,
        "calibrate",
        config_to_dict(cfg),
        inputs,
        lambda out, _resuming: calibrate(model_dir, text_path, cfg, out, bar),
        force=force,
    )


def _group(value: str) -> int:
    return -1 if value == "per-channel" else int(value)


@click.command("calibrate")
@run_dir_option
@model_option
@click.option(
    "--bits", type=click.Choice(["2", "3", "4", "8"]), default=None, help="Weight bits.  [default: 4]"
)
@click.option(
    "--group-size",
    type=click.Choice(["32", "64", "128", "per-channel"]),
    default=None,
    help="Inputs per quantization group; a short last group is allowed (576 = 4x128 + 64).  [default: 128]",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=None,
    help="omniquant (learned clipping) or rtn (min-max).  [default: omniquant]",
)
@click.option(
    "--calib",
    type=click.Choice(CALIBS),
    default=None,
    help="text: WikiText chunks; hybrid: each chunk led by an easy-VQA image sample.  [default: text]",
)
@click.option("--nsamples", type=int, default=None, help="Calibration sequences.  [default: 32]")
@click.option("--seqlen", type=int, default=None, help="Tokens per sequence.  [default: 512]")
@click.option("--epochs", type=int, default=None, help="Passes over the samples per block.  [default: 3]")
@click.option(
    "--lr",
    type=float,
    default=None,
    help="AdamW learning rate of the clipping logits (logits start at 4; a large rate lets few steps move them).  [default: 0.5]",
)
@click.option("--batch-size", type=int, default=None, help="Sequences per step.  [default: 4]")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option(
    "--rule",
    "rules",
    multiple=True,
    help="Targeting rule PATTERN=quantize|skip (PATTERN exact or re:REGEX), before the defaults.",
)
@click.option(
    "--text",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Raw text corpus; its first half calibrates. Default: WikiText-2 test from ../shared/data ($QSLAW_TEXT).",
)
@config_option
@force_option
@json_option
@user_errors
def command(run_dir, model, recipe, force, as_json, text, bits, group_size, rules, **flags) -> None:
    """OmniQuant (or RTN) int-k qparams for the LM's decoder Linears -> RUN_DIR/calibrate/."""
    quiet_libraries()
    flags.update(
        bits=int(bits) if bits else None,
        group_size=_group(group_size) if group_size else None,
        rules=tuple(rules) or None,
    )
    cfg = merge_recipe(CalibrateConfig, recipe, flags)
    result = run(cfg, run_dir, resolve_model(model), text or default_text_path(), force)
    m = result.artifact.metrics
    lines = [
        f"{'reused' if result.reused else 'wrote'} {result.artifact.path} ({m['layers']} layers, {cfg.method}, W{cfg.bits})"
    ]
    lines += [
        f"  block {b['block']:2d}: loss {b['loss_before']:.3e} -> {b['loss_after']:.3e}" for b in m["blocks"]
    ]
    emit({"artifact": str(result.artifact.path), "reused": result.reused, **m}, as_json, "\n".join(lines))
