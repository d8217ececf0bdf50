"""Benchmark: the paper's accuracy claims on our model. From the aligned default VLM, every method tunes on
the same batches (data order, steps and batch size are a pure function of the seed): fp, qlora, and at each
bit width (OmniQuant W-bit g128 init) frozen, qslaw, qslaw --no-warmup, qslaw --mm-only. Each tuned model
answers the same easy-VQA test questions (and a ScienceQA-format test split with --scienceqa); accuracy with
a 95% Wilson interval, per category. Writes docs/results/accuracy.{json,md,png}.

    python bench/accuracy.py --steps 200 --limit 500                 # a CPU study (background, ~90 min)
    python bench/accuracy.py --device cuda --steps 1000 --limit 2000  # the full study on a GPU
"""

import argparse
import csv
import json
import math
import shutil
import time
from pathlib import Path

from qslaw_pipe.pipeline.sysinfo import machine_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
# (label, tune method, bits or None, extra TuneConfig fields)
# in the order they run: the runs every claim needs first (results are written after each run)
VARIANTS = (
    ("fp", "fp", None, {}),
    ("qslaw", "qslaw", "bits", {}),
    ("frozen", "frozen", "bits", {}),
    ("qslaw no-warmup", "qslaw", "bits", {"warmup_steps": 0}),
    ("qslaw mm-only", "qslaw", "bits", {"mix_ratio": "1:0"}),
    ("qlora", "qlora", None, {}),
)


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p, z2 = hits / n, z * z
    centre, denom = p + z2 / (2 * n), 1 + z2 / n
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - half) / denom, (centre + half) / denom


def runs_to_make(bits: list[int], ablations_at: int) -> list[tuple[str, str, int | None, dict]]:
    """Every (name, method, bits, extra) run: fp and qlora once; frozen and qslaw at every bit width; the
    warmup ablations at `ablations_at` bits only."""
    out = []
    for label, method, uses_bits, extra in VARIANTS:
        if not uses_bits:
            out.append((label, method, None, extra))
            continue
        for b in bits:
            if extra and b != ablations_at:
                continue
            out.append((f"{label} W{b}", method, b, extra))
    return out


def score_row(metrics: dict) -> dict:
    hits = round(metrics["accuracy"] * metrics["n"])
    lo, hi = wilson(hits, metrics["n"])
    cats = {
        f"{k}={v}": {
            "accuracy": c["accuracy"],
            "n": c["n"],
            "ci": wilson(round(c["accuracy"] * c["n"]), c["n"]),
        }
        for k, vals in metrics["categories"].items()
        for v, c in vals.items()
    }
    return {"accuracy": metrics["accuracy"], "n": metrics["n"], "ci": [lo, hi], "categories": cats}


def losses(tune_dir: Path) -> list[tuple[int, float]]:
    with (tune_dir / "metrics.csv").open() as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


def study(args, report=lambda result: None) -> dict:
    """Every run of the protocol; `report(result so far)` after each, so a cut-short study still leaves
    its finished runs on disk."""
    from qslaw_pipe.cli_common import quiet_libraries
    from qslaw_pipe.paths import default_text_path, resolve_model
    from qslaw_pipe.stages import calibrate as cal
    from qslaw_pipe.stages import tune as tn
    from qslaw_pipe.stages.evaluate import mcq

    quiet_libraries()
    model = resolve_model(args.model)
    text = args.text or default_text_path()
    root = args.runs
    calibrations = {}
    for b in args.bits:
        base = root / f"calibrate-w{b}"
        ccfg = cal.CalibrateConfig(
            bits=b,
            group_size=args.group_size,
            method=args.calib_method,
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            epochs=args.epochs,
            device=args.device,
        )
        t = time.perf_counter()
        cal.run(ccfg, base, model, text, bar=args.bar)
        calibrations[b] = (base, time.perf_counter() - t)
    sets = [("easyvqa", args.data, args.limit)] + (
        [("scienceqa", str(args.scienceqa), 0)] if args.scienceqa else []
    )
    results = []
    for name, method, bits, extra in runs_to_make(args.bits, args.ablations_at):
        run = root / name.replace(" ", "-")
        if bits is not None and not (run / "calibrate").exists():
            shutil.copytree(calibrations[bits][0] / "calibrate", run / "calibrate")
        fields = dict(
            method=method,
            data=args.data,
            steps=args.steps,
            batch_size=args.batch_size,
            warmup_steps=max(1, args.steps // 5),
            seed=args.seed,
            device=args.device,
        )
        cfg = tn.TuneConfig(**{**fields, **extra})
        t = time.perf_counter()
        tuned = tn.run(cfg, run, model, text, bar=args.bar)
        row = {
            "name": name,
            "method": method,
            "bits": bits,
            "config": tuned.artifact.config,
            "tune_s": round(time.perf_counter() - t, 1),
            "mean_step_s": tuned.artifact.metrics["mean_step_s"],
            "final_loss": tuned.artifact.metrics["final_loss"],
            "loss_curve": losses(tuned.artifact.path),
        }
        for label, data, limit in sets:
            ecfg = mcq.McqConfig(data=data, limit=limit, seed=args.seed, device=args.device)
            row[label] = score_row(mcq.run_mcq(ecfg, run, bar=args.bar).artifact.metrics)
        results.append(row)
        report({"runs": results, "calibration_s": {b: round(s, 1) for b, (_, s) in calibrations.items()}})
        print(
            f"{name:<20} acc {100 * row['easyvqa']['accuracy']:.1f}%  loss {row['final_loss']:.3f}",
            flush=True,
        )
    return {"runs": results, "calibration_s": {b: round(s, 1) for b, (_, s) in calibrations.items()}}


def _acc(row: dict, key: str = "easyvqa") -> str:
    r = row[key]
    return f"{100 * r['accuracy']:.1f} [{100 * r['ci'][0]:.1f}, {100 * r['ci'][1]:.1f}]"


def claims(runs: dict[str, dict], bits: list[int], ablations_at: int) -> list[str]:
    """Each claim of the paper, as measured (with the intervals that decide it)."""
    acc = {n: r["easyvqa"] for n, r in runs.items()}

    def cmp(a: str, b: str, margin: float = 0.0) -> str:
        if a not in acc or b not in acc:
            return "not measured"
        d = 100 * (acc[a]["accuracy"] - acc[b]["accuracy"])
        overlap = acc[a]["ci"][0] <= acc[b]["ci"][1] and acc[b]["ci"][0] <= acc[a]["ci"][1]
        verdict = "met" if d >= 100 * margin else "NOT met"
        return f"{verdict}: {a} {100 * acc[a]['accuracy']:.1f}% vs {b} {100 * acc[b]['accuracy']:.1f}% ({d:+.1f} points; intervals {'overlap' if overlap else 'separate'})"

    lines = []
    if "fp" in acc:
        verdict = "met" if acc["fp"]["accuracy"] >= 0.9 else "NOT met"
        lines.append(f"- FP fine-tuned >= 90%: {verdict} ({_acc(runs['fp'])})")
    if 4 in bits:
        lines.append(f"- QSLAW W4 >= FP - 1 point: {cmp('qslaw W4', 'fp', -0.01)}")
    if 3 in bits:
        lines.append(f"- QSLAW W3 >= QLoRA + 2 points: {cmp('qslaw W3', 'qlora', 0.02)}")
    for b in bits:
        lines.append(f"- QSLAW W{b} > frozen W{b}: {cmp(f'qslaw W{b}', f'frozen W{b}', 1e-9)}")
    b = ablations_at
    order = [f"qslaw mm-only W{b}", f"qslaw no-warmup W{b}", f"qslaw W{b}"]
    if all(o in acc for o in order):
        vals = [100 * acc[o]["accuracy"] for o in order]
        seen = "the paper's order" if vals[0] < vals[1] < vals[2] else "NOT the paper's order"
        lines.append(
            f"- warmup ablation (mm-only < no-warmup < warmup): {seen}: "
            + " / ".join(f"{v:.1f}%" for v in vals)
        )
        lines.append(f"  {cmp(order[2], order[1], 1e-9)}; {cmp(order[1], order[0], 1e-9)}")
    return lines


def markdown(result: dict, meta: dict) -> str:
    runs = {r["name"]: r for r in result["runs"]}
    cats = sorted({c for r in result["runs"] for c in r["easyvqa"]["categories"]})
    head = "| run | easy-VQA % [95% CI] | " + " | ".join(cats) + " | final loss | s/step |"
    lines = [
        f"# Accuracy: QSLAW vs full precision, QLoRA and the ablations ({meta['device']})",
        "",
        f"`python bench/accuracy.py {meta['argv']}`; {meta['when']}; wall time of the last invocation "
        f"{meta['wall_s'] / 60:.1f} min (runs finished by an earlier invocation are reused, not redone). "
        f"Model: {meta['model']}. Every run: {meta['steps']} steps of batch {meta['batch_size']} on the same batches "
        f"(seed {meta['seed']}), warmup the first {max(1, meta['steps'] // 5)} steps (multimodal only), then 1:1 "
        f"with WikiText; calibration {meta['calib']}. Scored: {result['runs'][0]['easyvqa']['n']} easy-VQA test "
        "questions (seeded subset), greedy letter; 95% Wilson intervals. "
        f"Runs finished: {meta.get('runs_done', len(result['runs']))} of {meta.get('runs_planned', len(result['runs']))} "
        "planned (in this order; the rest not measured). s/step: mean over the run's steps, which shared the CPU "
        "with other jobs (not a speed comparison; see tune_step_time.md).",
        "",
        head,
        "|" + "---|" * (len(cats) + 4),
    ]
    for name, r in runs.items():
        per = " | ".join(
            f"{100 * r['easyvqa']['categories'][c]['accuracy']:.1f}"
            if c in r["easyvqa"]["categories"]
            else "-"
            for c in cats
        )
        lines.append(f"| {name} | {_acc(r)} | {per} | {r['final_loss']:.3f} | {r['mean_step_s']:.2f} |")
    if any("scienceqa" in r for r in runs.values()):
        lines += ["", "| run | ScienceQA test % [95% CI] |", "|---|---|"]
        lines += [f"| {n} | {_acc(r, 'scienceqa')} |" for n, r in runs.items() if "scienceqa" in r]
    lines += ["", "Claims of the paper, as measured here:", *claims(runs, meta["bits"], meta["ablations_at"])]
    lines += ["", "![accuracy and loss curves](accuracy.png)"]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    acc = [100 * r["easyvqa"]["accuracy"] for r in runs]
    err = [
        [100 * (r["easyvqa"]["accuracy"] - r["easyvqa"]["ci"][0]) for r in runs],
        [100 * (r["easyvqa"]["ci"][1] - r["easyvqa"]["accuracy"]) for r in runs],
    ]
    a.bar(range(len(runs)), acc, yerr=err, capsize=3, color="tab:blue")
    a.set_xticks(range(len(runs)), [r["name"] for r in runs], rotation=35, ha="right")
    a.set_ylabel("easy-VQA test accuracy, % (95% CI)")
    a.set_ylim(0, 100)
    a.axhline(100 * runs[0]["easyvqa"]["accuracy"], color="grey", lw=0.5)
    for r in runs:
        steps, values = zip(*r["loss_curve"], strict=True)
        k = 10
        smooth = [
            sum(values[max(0, i - k + 1) : i + 1]) / len(values[max(0, i - k + 1) : i + 1])
            for i in range(len(values))
        ]
        b.plot(steps, smooth, label=r["name"])
    b.set_xlabel("step")
    b.set_ylabel("training loss (10-step mean)")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--limit", type=int, default=500, help="easy-VQA test questions scored (0 = all).")
    ap.add_argument("--bits", default="4,3", help="Bit widths for frozen / qslaw (comma-separated).")
    ap.add_argument("--ablations-at", type=int, default=4, help="Bit width of the warmup ablations.")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--calib-method", default="omniquant")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data", default="easyvqa", help="Training and scoring set (easyvqa or a ScienceQA directory)."
    )
    ap.add_argument(
        "--scienceqa",
        type=Path,
        default=None,
        help="Also score this ScienceQA-format directory's test split.",
    )
    ap.add_argument(
        "--model", type=Path, default=None, help="Default: the aligned default VLM (qslaw-pipe prepare)."
    )
    ap.add_argument("--text", type=Path, default=None)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-accuracy")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-bar", dest="bar", action="store_false")
    ap.add_argument(
        "--render", action="store_true", help="Only rewrite accuracy.md and .png from accuracy.json."
    )
    args = ap.parse_args(argv)
    args.bits = [int(b) for b in args.bits.split(",")]
    if args.render:
        saved = json.loads((args.out / "accuracy.json").read_text())
        (args.out / "accuracy.md").write_text(markdown(saved, saved["meta"]))
        plot(saved, args.out / "accuracy.png")
        return
    start = time.perf_counter()

    def write(result: dict) -> None:
        meta = {
            "device": machine_name(args.device),
            "argv": " ".join(argv if argv is not None else sys.argv[1:]),
            "when": time.strftime("%Y-%m-%d"),
            "wall_s": time.perf_counter() - start,
            "model": str(args.model or "aligned default VLM"),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "bits": args.bits,
            "ablations_at": args.ablations_at,
            "calib": f"{args.calib_method} g{args.group_size}, {args.nsamples} x {args.seqlen} tokens, {args.epochs} epochs",
            "runs_done": len(result["runs"]),
            "runs_planned": len(runs_to_make(args.bits, args.ablations_at)),
        }
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "accuracy.json").write_text(json.dumps({"meta": meta, **result}, indent=1))
        (args.out / "accuracy.md").write_text(markdown(result, meta))
        plot(result, args.out / "accuracy.png")

    result = study(args, write)
    write(result)
    print((args.out / "accuracy.md").read_text())


if __name__ == "__main__":
    main()
