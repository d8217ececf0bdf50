"""Benchmark: data-parallel tune step time on the default VLM, 1 vs 2 processes of one CPU core each.

Each configuration runs `qslaw-pipe tune` (qslaw, the same global batches) from the same calibrate artifact in a
fresh run directory; the step time is the mean of metrics.csv's `seconds` after the first step. The order
1, 2, 1 process(es) puts the machine's drift on both sides. Writes docs/results/scale_out.{json,md}.

    python bench/scale_out.py [--steps 12] [--calibration runs/bench-accuracy/calibrate-w4]
"""

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


def tune(calibration: Path, run: Path, nproc: int, steps: int, batch: int) -> list[float]:
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(calibration / "calibrate", run / "calibrate")
    cmd = [sys.executable, "-m", "qslaw_pipe", "tune", "--run-dir", str(run), "--steps", str(steps)]
    cmd += ["--batch-size", str(batch), "--warmup-steps", "2", "--device", "cpu", "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = list(csv.DictReader((run / "tune" / "metrics.csv").open()))
    return [float(r["seconds"]) for r in rows[1:]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--calibration", type=Path, default=ROOT / "runs" / "bench-accuracy" / "calibrate-w4")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-scale-out")
    args = ap.parse_args()
    from qslaw_pipe.pipeline.sysinfo import machine_name

    times = {1: [], 2: []}
    for i, nproc in enumerate((1, 2, 1)):
        times[nproc] += tune(args.calibration, args.runs / f"{i}-{nproc}", nproc, args.steps, args.batch_size)
    step = {n: statistics.mean(v) for n, v in times.items()}
    ratio = step[2] / step[1]
    machine = re.sub(r", \d+ threads", ", 1 core per process", machine_name("cpu"))
    result = {
        "device": machine,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "mean_step_s": step,
        "ratio_2_over_1": ratio,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale_out.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Data-parallel tune on the CPU ({machine})",
        "",
        f"Produced by `python bench/scale_out.py --steps {args.steps}`: `qslaw-pipe tune` (qslaw, default VLM, "
        f"global batch {args.batch_size}, W4 g128 OmniQuant start) with `--nproc 1` and `--nproc 2`, one CPU core "
        "per process (OMP_NUM_THREADS=1), gloo; run in the order 1, 2, 1; mean step time after the first step.",
        "",
        "| processes | mean s per global batch | / 1 process |",
        "|---|---|---|",
        f"| 1 | {step[1]:.2f} | 1.00 |",
        f"| 2 | {step[2]:.2f} | {ratio:.2f} |",
        "",
        f"Goal (issue: <= 0.6x one process): {'met' if ratio <= 0.6 else 'NOT met'} ({ratio:.2f}x).",
    ]
    (OUT / "scale_out.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
