"""Benchmark: QSLAW vs its baselines and ablations on the default VLM, easy-VQA multiple choice.

One fixed budget (steps, batch, seed, data) for fp / qlora / frozen / qslaw / qslaw --no-warmup /
qslaw --mm-only. Each method tunes in its own process (so its peak RSS is its own), then all are
scored on the same easy-VQA test questions. Writes docs/results/tune.{json,md} and tune.png.

    python bench/tune.py [--steps 120] [--limit 500] [--calibration runs/bench-calibrate/w4-omniquant]
"""

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
VARIANTS = {
    "fp": ["--method", "fp"],
    "qlora": ["--method", "qlora"],
    "frozen": ["--method", "frozen"],
    "qslaw": ["--method", "qslaw"],
    "qslaw --no-warmup": ["--method", "qslaw", "--no-warmup"],
    "qslaw --mm-only": ["--method", "qslaw", "--mm-only"],
}


def cli(*args: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "qslaw_pipe", *args, "--json"], capture_output=True, text=True
    )
    if res.returncode:
        sys.exit(f"qslaw-pipe {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout)


def calibration(args) -> Path:
    """A calibrate artifact (default config, W4 g128) to share between the quantized methods."""
    if args.calibration:
        return args.calibration
    base = args.runs / "calibration"
    cli("calibrate", "--run-dir", str(base))
    return base


def tune_all(args, calib_run: Path) -> dict[str, dict]:
    results = {}
    for name, flags in VARIANTS.items():
        run = args.runs / name.replace(" --", "-")
        if not (run / "calibrate").exists():
            run.mkdir(parents=True, exist_ok=True)
            shutil.copytree(calib_run / "calibrate", run / "calibrate")
        budget = [
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--warmup-steps",
            str(args.warmup),
        ]
        m = cli("tune", "--run-dir", str(run), *budget, *flags)
        manifest = json.loads((run / "tune" / "manifest.json").read_text())
        results[name] = {
            "run": run,
            "mean_step_s": m["mean_step_s"],
            "peak_rss_mb": manifest["peak_rss_mb"],
            "final_loss": m["final_loss"],
            "trainable_params": m["trainable_params"],
        }
        print(name, results[name], flush=True)
    return results


def score_all(args, results: dict[str, dict]) -> None:
    runs = [str(r["run"]) for r in results.values()]
    baselines = [a for r in runs[1:] for a in ("--baseline", r)]
    scores = cli("eval", "mcq", "--run-dir", runs[0], *baselines, "--limit", str(args.limit))
    for r in results.values():
        s = scores[str(r["run"])]
        r["accuracy"] = s["accuracy"]
        r["by_question_type"] = {
            k: v["accuracy"] for k, v in s["categories"].get("question_type", {}).items()
        }
        r["n"], r["unparsed"] = s["n"], s["unparsed"]


def goals(results: dict[str, dict]) -> list[str]:
    q, fp, ql = results["qslaw"], results["fp"], results["qlora"]
    checks = [
        ("QSLAW within 0.5 points of fp or better", 100 * (q["accuracy"] - fp["accuracy"]) >= -0.5),
        ("QSLAW at least 2 points above QLoRA", 100 * (q["accuracy"] - ql["accuracy"]) >= 2),
        ("QSLAW peak RSS at most 0.6x fp", q["peak_rss_mb"] <= 0.6 * fp["peak_rss_mb"]),
        ("QSLAW step time at most fp's", q["mean_step_s"] <= fp["mean_step_s"]),
    ]
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(results)
    a.bar(range(len(names)), [100 * results[n]["accuracy"] for n in names], color="tab:blue")
    a.set_xticks(range(len(names)), names, rotation=30, ha="right")
    a.set_ylabel("easy-VQA test accuracy (%)")
    for name in names:
        rows = list(csv.DictReader((results[name]["run"] / "tune" / "metrics.csv").open()))
        mm = [(int(r["step"]), float(r["loss_multimodal"])) for r in rows if r["loss_multimodal"]]
        xs, ys = zip(*mm, strict=True)
        smooth = [sum(ys[max(0, i - 9) : i + 1]) / len(ys[max(0, i - 9) : i + 1]) for i in range(len(ys))]
        b.plot(xs, smooth, label=name)
    b.set_xlabel("step")
    b.set_ylabel("answer-token loss (10-step mean)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(args, results: dict[str, dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    setup = {
        "model": "default VLM (SmolLM2-135M + DINOv2-S, 84 px)",
        "data": "easy-VQA train (multiple choice) + WikiText-2",
        "steps": args.steps,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "eval": f"easy-VQA test, {args.limit} seeded questions, greedy letter",
    }
    serial = {k: {**v, "run": str(v["run"])} for k, v in results.items()}
    (OUT / "tune.json").write_text(json.dumps({"setup": setup, "results": serial}, indent=2))
    fp = results["fp"]
    lines = [
        "# Tune benchmark",
        "",
        "Produced by `python bench/tune.py`. " + "; ".join(f"{k}: {v}" for k, v in setup.items()) + ".",
        "",
        "| method | accuracy | yes/no | shape | color | unparsed | mean step s | step / fp | peak RSS MB | RSS / fp | trained values |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        qt = r["by_question_type"]
        lines.append(
            f"| {name} | {100 * r['accuracy']:.1f}% | "
            + " | ".join(f"{100 * qt.get(k, 0):.1f}%" for k in ("yes/no", "shape", "color"))
            + f" | {r['unparsed']} | {r['mean_step_s']:.2f} | {r['mean_step_s'] / fp['mean_step_s']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_rss_mb'] / fp['peak_rss_mb']:.2f} | {r['trainable_params']:,} |"
        )
    lines += ["", "Goals (the paper's claims):", *goals(results), "", "![accuracy and loss](tune.png)"]
    (OUT / "tune.md").write_text("\n".join(lines) + "\n")
    plot(results, OUT / "tune.png")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument(
        "--calibration", type=Path, default=None, help="A run directory holding calibrate/ to reuse."
    )
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-tune")
    args = ap.parse_args()
    results = tune_all(args, calibration(args))
    score_all(args, results)
    write(args, results)


if __name__ == "__main__":
    main()
