"""Benchmark: multiple-choice accuracy of the calibrated int-k VLM without tuning its LM (issue: qvlm >=
omniquant >= rtn). Each calibrate artifact of bench/calibrate.py (runs/bench-calibrate/w<bits>-<method>) gets
`tune --method frozen` (the LM stays at its calibrated int-k weights; only the projector learns, as
bench/accuracy.py's frozen rows: 150 steps of batch 4, seed 0) and is scored on the same easy-VQA test
questions with 95% Wilson intervals. Writes docs/results/calibrate_mcq.{json,md}.

    python bench/calibrate_mcq.py [--bits 3] [--methods rtn,omniquant,qvlm] [--steps 150] [--limit 500]
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="3")
    ap.add_argument("--methods", default="rtn,omniquant,qvlm")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--calibrations", type=Path, default=ROOT / "runs" / "bench-calibrate")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-calibrate-mcq")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from accuracy import wilson

    from qslaw_pipe.cli_common import quiet_libraries
    from qslaw_pipe.paths import default_model_dir
    from qslaw_pipe.pipeline.data.text import default_text_path
    from qslaw_pipe.pipeline.sysinfo import machine_name
    from qslaw_pipe.stages import tune as tn
    from qslaw_pipe.stages.evaluate import mcq

    quiet_libraries()
    rows, start = [], time.perf_counter()
    for bits in (int(b) for b in args.bits.split(",")):
        for method in args.methods.split(","):
            run = args.runs / f"w{bits}-{method}"
            if not (run / "calibrate").exists():
                shutil.copytree(args.calibrations / f"w{bits}-{method}" / "calibrate", run / "calibrate")
            cfg = tn.TuneConfig(
                method="frozen", steps=args.steps, batch_size=4, warmup_steps=max(1, args.steps // 5)
            )
            tn.run(cfg, run, default_model_dir(), default_text_path(), bar=False)
            m = mcq.run_mcq(
                mcq.McqConfig(data="easyvqa", limit=args.limit, seed=0), run, bar=False
            ).artifact.metrics
            hits, n = round(m["accuracy"] * m["n"]), m["n"]
            rows.append(
                {"bits": bits, "method": method, "accuracy": m["accuracy"], "n": n, "ci95": wilson(hits, n)}
            )
            print(rows[-1], flush=True)
    machine = machine_name("cpu")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "calibrate_mcq.json").write_text(
        json.dumps({"device": machine, "steps": args.steps, "rows": rows}, indent=2)
    )
    lines = [
        f"# Calibrated VLM, LM not tuned: easy-VQA accuracy ({machine})",
        "",
        f"Produced by `python bench/calibrate_mcq.py --bits {args.bits} --steps {args.steps} --limit {args.limit}` "
        f"in {(time.perf_counter() - start) / 60:.1f} min: each calibrate artifact of bench/calibrate.py, then "
        f"`tune --method frozen` ({args.steps} steps of batch 4: the projector alone learns; the LM keeps its "
        "calibrated int-k weights), scored on the same seeded easy-VQA test questions, greedy letter, 95% Wilson "
        "intervals.",
        "",
        "| bits | calibration | easy-VQA % [95% CI] | questions |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| W{r['bits']} g128 | {r['method']} | {100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, "
        f"{100 * r['ci95'][1]:.1f}] | {r['n']} |"
        for r in rows
    ]
    (OUT / "calibrate_mcq.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
