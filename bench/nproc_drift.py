"""Benchmark: how far `calibrate --nproc 2` ends from one process, by calibration length (tiny model, CPU).

The ranks sum their clipping gradients in another order than one process sums the whole minibatch, so
the two differ by float rounding per step; AdamW's normalised steps carry that rounding on, and where a
clipping logit sits near a rounding boundary a zero point moves. This measures the drift after 1, 5 and 30
epochs (OmniQuant, W3 g32, 6 samples of 16 tokens, minibatches of 4 straddling the ranks): the largest
difference of the clipping logits and of delta, and how many zero points differ, by how much.
Writes docs/results/nproc_drift.{json,md}.

    python bench/nproc_drift.py [--epochs 1 5 30]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "results"
FLAGS = ["--method", "omniquant", "--bits", "3", "--group-size", "32", "--nsamples", "6", "--seqlen", "16"]
FLAGS += ["--batch-size", "4", "--device", "cpu"]


def calibrate(root: Path, model: Path, corpus: Path, epochs: int, nproc: int) -> dict[str, torch.Tensor]:
    from qslaw_pipe.pipeline.tensors import load_tensors

    run = root / f"e{epochs}-n{nproc}"
    cmd = [sys.executable, "-m", "qslaw_pipe", "calibrate", "--run-dir", str(run), "--model", str(model)]
    cmd += ["--text", str(corpus), *FLAGS, "--epochs", str(epochs), "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return load_tensors(run / "calibrate" / "qparams.safetensors")[0]


def drift(one: dict, two: dict) -> dict:
    def largest(suffix: str) -> float:
        return max(float((one[k].float() - two[k].float()).abs().max()) for k in one if k.endswith(suffix))

    zps = [k for k in one if k.endswith(".zero_point")]
    moved = sum(int((one[k] != two[k]).sum()) for k in zps)
    return {
        "clipping_logits_max_abs": max(largest(".lwc_upper"), largest(".lwc_lower")),
        "delta_max_abs": largest(".delta"),
        "zero_points_differing": moved,
        "zero_points_total": sum(one[k].numel() for k in zps),
        "zero_point_max_step": max(int((one[k].int() - two[k].int()).abs().max()) for k in zps),
    }


def main() -> None:
    from qslaw_pipe.pipeline.sysinfo import machine_name
    from tests.tiny import CORPUS, tiny_llava

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 5, 30])
    args = ap.parse_args()
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = tiny_llava(root / "model")
        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(CORPUS * 4) + "\n")
        for epochs in args.epochs:
            one, two = (calibrate(root, model, corpus, epochs, n) for n in (1, 2))
            rows.append({"epochs": epochs, **drift(one, two)})
            print(rows[-1], flush=True)
    meta = {
        "machine": machine_name("cpu"),
        "when": time.strftime("%Y-%m-%d"),
        "wall_s": round(time.perf_counter() - start),
        "flags": " ".join(FLAGS),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "nproc_drift.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# calibrate --nproc 2 vs one process ({meta['machine']})",
        "",
        f"`python bench/nproc_drift.py`; {meta['when']}; tiny LLaVA, `{meta['flags']}`; {meta['wall_s']} s.",
        "",
        "| epochs | clipping logits max abs diff | delta max abs diff | zero points differing | largest zero-point step |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['epochs']} | {r['clipping_logits_max_abs']:.2e} | {r['delta_max_abs']:.2e} | "
        f"{r['zero_points_differing']} of {r['zero_points_total']} | {r['zero_point_max_step']} |"
        for r in rows
    ]
    (OUT / "nproc_drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
