"""Benchmark: tuning step time of fp / qlora / frozen / qslaw measured interleaved in one process, so machine
noise hits every method alike (bench/tune.py times each method in its own process, one after another).
Same batches for all (a mixed batch: half easy-VQA, half WikiText). Writes docs/results/tune_step_time.{json,md}.

    python bench/tune_step_time.py [--steps 6] [--calibration runs/bench-calibrate/w4-omniquant]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from qslaw_pipe.cli_common import quiet_libraries
from qslaw_pipe.paths import default_model_dir
from qslaw_pipe.pipeline.artifact import read_artifact
from qslaw_pipe.pipeline.data.sets import load_train_samples
from qslaw_pipe.pipeline.data.text import default_text_path, read_text, split_text, token_chunks
from qslaw_pipe.stages.tune import DEFAULT_LR
from qslaw_pipe.stages.tune.batches import StepSampler, collate, parse_mix
from qslaw_pipe.stages.tune.loop import train_step
from qslaw_pipe.stages.tune.methods import build_method_model

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
METHODS = ("fp", "qlora", "frozen", "qslaw")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--calibration", type=Path, default=ROOT / "runs" / "bench-calibrate" / "w4-omniquant")
    args = ap.parse_args()
    quiet_libraries()
    calib = read_artifact(args.calibration, "calibrate")
    models, opts = {}, {}
    for method in METHODS:
        torch.manual_seed(0)
        lm = build_method_model(
            default_model_dir(), method, calib if method in ("qslaw", "frozen") else None, compiled=True
        )
        lm.model.train()
        params = [p for p in lm.model.parameters() if p.requires_grad]
        models[method], opts[method] = lm, torch.optim.AdamW(params, lr=DEFAULT_LR[method] or 1e-3)
    lm0 = next(iter(models.values()))
    chunks = token_chunks(lm0.tokenizer, split_text(read_text(default_text_path()), "calib"), 96, 256)
    sampler = StepSampler(lm0.processor, load_train_samples("easyvqa"), chunks, 4, 0, parse_mix("1:1"), 0)
    times = {m: [] for m in METHODS}
    for step in range(args.steps + 1):  # step 0 warms up (compilation), not counted
        batch = collate(sampler.examples(step), 0)
        for method in METHODS:
            t = time.perf_counter()
            train_step(models[method].model, opts[method], batch)
            if step:
                times[method].append(time.perf_counter() - t)
    rows = {
        m: {
            "median_step_s": statistics.median(v),
            "vs_fp": statistics.median(v) / statistics.median(times["fp"]),
        }
        for m, v in times.items()
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tune_step_time.json").write_text(
        json.dumps({"steps": args.steps, "batch": "4 (2 easy-VQA + 2 WikiText x 96)", "rows": rows}, indent=2)
    )
    lines = [
        "# Tune step time, interleaved",
        "",
        f"Produced by `python bench/tune_step_time.py`: {args.steps} timed steps per method, "
        "methods alternating on the same mixed batches (batch 4: 2 easy-VQA + 2 WikiText x 96 tokens), one process, "
        f"{torch.get_num_threads()} threads.",
        "",
        "| method | median step s | / fp |",
        "|---|---|---|",
    ]
    lines += [f"| {m} | {r['median_step_s']:.2f} | {r['vs_fp']:.2f} |" for m, r in rows.items()]
    (OUT / "tune_step_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
