"""Benchmark: tune step time before and after the fast path, measured interleaved in one process, so machine
noise hits every variant alike.

Variants, per method (fp, frozen, qslaw), on the same mixed batches (half easy-VQA, half WikiText):
  plain  quantized weights rebuilt in backward, per-tensor AdamW (the step before the fast path)
  fast   quantized weights and scale-gradient coefficients kept from forward, fused AdamW (the CPU default)
  bf16   fast under `--dtype bf16` (frozen weights and matmuls in bf16): not exact, shown with its loss change
Before timing, each variant's loss on one fixed batch is compared with plain's (goal: fast within 1e-4).
After timing, one more step of each `fast` variant runs under torch.profiler: where its time goes.
Writes docs/results/tune_step_time.{json,md} with the machine.

    python bench/tune_step_time.py [--steps 5] [--calibration runs/bench-accuracy/calibrate-w4]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from qslaw_pipe.cli_common import quiet_libraries
from qslaw_pipe.paths import default_model_dir, default_text_path
from qslaw_pipe.pipeline.artifact import read_artifact
from qslaw_pipe.pipeline.data.sets import load_train_samples
from qslaw_pipe.pipeline.data.text import read_text, split_text, token_chunks
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.pipeline.sysinfo import machine_name
from qslaw_pipe.stages.tune import TuneConfig
from qslaw_pipe.stages.tune.batches import StepSampler, collate
from qslaw_pipe.stages.tune.config import parse_mix
from qslaw_pipe.stages.tune.loop import optimizer, train_step
from qslaw_pipe.stages.tune.loss import batch_loss
from qslaw_pipe.stages.tune.methods import build_method_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
METHODS = ("fp", "frozen", "qslaw")
VARIANTS = {"plain": ("fp32", False), "fast": ("fp32", True), "bf16": ("bf16", True)}


def build(method: str, variant: str, calib):
    dtype, fast = VARIANTS[variant]
    compute = resolve("cpu", dtype)
    torch.manual_seed(0)
    lm = build_method_model(
        default_model_dir(),
        method,
        calib if method != "fp" else None,
        compiled=True,
        compute=compute,
        keep=fast,
    )
    lm.model.train()
    opt, _ = optimizer(lm.model, TuneConfig(method=method), fused=fast)
    return lm, opt, compute


SHARES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"),
    "fused elementwise (fake quant)": ("## Call CompiledFxGraph",),
    "attention": ("aten::_scaled_dot_product",),
    "optimizer": ("aten::_fused_adamw", "aten::_foreach", "aten::lerp_", "aten::addcdiv_", "aten::addcmul_"),
}


def profile_shares(lm, opt, compute, batch) -> dict[str, float]:
    """Share of one step's self CPU time per kind of op (the rest under 'other')."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step(lm.model, opt, batch, compute)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {
        kind: sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
        for kind, prefixes in SHARES.items()
    }
    return {**shares, "other": 1 - sum(shares.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--calibration", type=Path, default=ROOT / "runs" / "bench-accuracy" / "calibrate-w4")
    args = ap.parse_args()
    quiet_libraries()
    # nine models in one process: every (dtype, kernel) pair compiles once, without hitting dynamo's limit
    torch._dynamo.config.recompile_limit = 64
    calib = read_artifact(args.calibration, "calibrate")
    runs = {(m, v): build(m, v, calib) for m in METHODS for v in VARIANTS}
    lm0 = runs[METHODS[0], "plain"][0]
    chunks = token_chunks(lm0.tokenizer, split_text(read_text(default_text_path()), "calib"), 96, 256)
    sampler = StepSampler(
        lm0.processor, lm0.arch, load_train_samples("easyvqa"), chunks, 4, 0, parse_mix("1:1"), 0
    )
    fixed = collate(sampler.examples(0), 0)
    loss = {}
    for key, (lm, _, compute) in runs.items():
        with torch.no_grad(), compute.autocast():
            loss[key] = batch_loss(lm.model, fixed)[0].item()
    times = {key: [] for key in runs}
    for step in range(args.steps + 1):  # step 0 warms up (compilation), not counted
        batch = collate(sampler.examples(step), 0)
        for key, (lm, opt, compute) in runs.items():
            t = time.perf_counter()
            train_step(lm.model, opt, batch, compute)
            if step:
                times[key].append(time.perf_counter() - t)
    profiles = {
        m: profile_shares(*runs[m, "fast"], collate(sampler.examples(args.steps + 1), 0)) for m in METHODS
    }
    rows = [
        {
            "method": m,
            "variant": v,
            "median_step_s": statistics.median(times[m, v]),
            "vs_plain": statistics.median(times[m, v]) / statistics.median(times[m, "plain"]),
            "fixed_batch_loss": loss[m, v],
            "loss_change": loss[m, v] - loss[m, "plain"],
        }
        for m in METHODS
        for v in VARIANTS
    ]
    machine = machine_name("cpu")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tune_step_time.json").write_text(
        json.dumps(
            {
                "device": machine,
                "steps": args.steps,
                "batch": "4 (2 easy-VQA + 2 WikiText x 96)",
                "rows": rows,
                "profile_fast": profiles,
            },
            indent=2,
        )
    )
    lines = [
        f"# Tune step time, interleaved ({machine})",
        "",
        f"Produced by `python bench/tune_step_time.py --steps {args.steps}`: the median of {args.steps} timed steps "
        "per method and variant, all alternating on the same mixed batches (batch 4: 2 easy-VQA + 2 WikiText x 96 "
        "tokens) in one process, after one untimed step. plain: quantized weights rebuilt in backward and "
        "per-tensor AdamW (the step before the fast path); fast: weights and scale-gradient coefficients kept "
        "from forward, fused AdamW (tune's default on the CPU); bf16: fast under `--dtype bf16`. Loss change: "
        "loss on one fixed batch before any step minus plain's.",
        "",
        "| method | variant | median step s | / plain | fixed-batch loss | loss change |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['method']} | {r['variant']} | {r['median_step_s']:.2f} | {r['vs_plain']:.2f} | "
        f"{r['fixed_batch_loss']:.5f} | {r['loss_change']:+.1e} |"
        for r in rows
    ]
    lines += [
        "",
        "Where a fast step's time goes (torch.profiler, self CPU time of one step, share per kind of op):",
        "",
        "| method | " + " | ".join([*SHARES, "other"]) + " |",
        "|---|" + "---|" * (len(SHARES) + 1),
    ]
    lines += [f"| {m} | " + " | ".join(f"{v:.0%}" for v in p.values()) + " |" for m, p in profiles.items()]
    (OUT / "tune_step_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
