"""Benchmark: held-out WikiText perplexity of the default LM (SmolLM2-135M inside the default VLM) at
W4 g128 and W3 g128 for full precision, RTN and ours (OmniQuant LWC; Q-VLM's entropy blocks; SignRound's
learned rounding), plus calibration wall time (the peers, GPTQ, AutoRound and HQQ, come from bench/peers.py
in their own venv). Writes docs/results/calibrate.{json,md}. `--methods` / `--bits` run a subset and keep the
other rows of an earlier calibrate.json (each row says when, on which machine and with which settings it was
measured; a row whose settings differ from the defaults names them).

    python bench/calibrate.py [--windows 32] [--nsamples 32] [--epochs 3] [--methods rtn,omniquant,qvlm]
    python bench/calibrate.py --methods signround --bits 3,4 --group-size 64 --epochs 13 --batch-size 8 --dtype bf16
    python bench/calibrate.py --methods checkpoint --group-size 64 --checkpoint-label "AutoRound 50 iters" \
        --from-checkpoint runs/imports/w{bits}g64-50iters/auto_round/lm-w{bits}g64   (bench/import_check.py --iters 50)
"""

import argparse
import copy
import json
import math
import time
from pathlib import Path

from qslaw_pipe.cli_common import quiet_libraries
from qslaw_pipe.paths import default_model_dir, default_text_path
from qslaw_pipe.pipeline.artifact import read_artifact
from qslaw_pipe.pipeline.data.text import read_text, split_text, token_chunks
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import apply_fake_quant, load_calibrated
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages.evaluate.perplexity import perplexity

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=None, help="Unset: each method's own rate.")
    ap.add_argument("--batch-size", type=int, default=cal.CalibrateConfig.batch_size)
    ap.add_argument("--dtype", default="auto", help="Calibration compute: auto (fp32 on a CPU), bf16, fp32.")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-calibrate")
    ap.add_argument("--methods", default="rtn,omniquant,qvlm")
    ap.add_argument("--bits", default="4,3")
    ap.add_argument("--group-size", type=int, default=128, help="Ours and RTN; rows other than g128 say so.")
    ap.add_argument(
        "--from-checkpoint",
        help="For --methods checkpoint: a quantized checkpoint directory, {bits} standing for the bit width.",
    )
    ap.add_argument(
        "--checkpoint-label", default="a checkpoint", help="Who made the checkpoint (the row's name)."
    )
    args = ap.parse_args()
    methods = args.methods.split(",")
    from qslaw_pipe.pipeline.sysinfo import machine_name

    stamp = {"measured": time.strftime("%Y-%m-%d"), "device": machine_name("cpu")}
    quiet_libraries()
    model_dir, text_path = default_model_dir(), default_text_path()
    lm = load_model(model_dir)
    windows = token_chunks(lm.tokenizer, split_text(read_text(text_path), "eval"), 512, args.windows)
    rows = [
        {"bits": 16, "method": "fp", "ppl": perplexity(lm.model, windows, 4, "fp"), "calib_s": 0.0, **stamp}
    ]
    print(rows[-1], flush=True)
    for bits in (int(b) for b in args.bits.split(",")):
        for method in [m for m in ORDER if m in methods]:
            cfg = cal.CalibrateConfig(
                bits=bits,
                group_size=args.group_size,
                method=method,
                nsamples=args.nsamples,
                seqlen=512,
                epochs=args.epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                dtype=args.dtype,
                **(
                    {"from_checkpoint": args.from_checkpoint.format(bits=bits)}
                    if method == "checkpoint"
                    else {}
                ),
            )
            suffix = ("" if args.group_size == 128 else f" g{args.group_size}") + (
                f" ({args.checkpoint_label})" if method == "checkpoint" else _budget(cfg)
            )
            res = cal.run(
                cfg,
                args.runs / f"w{bits}-{method}{suffix}".replace(" ", "-"),
                model_dir,
                text_path,
                force=True,
            )
            art = read_artifact(res.artifact.path.parent, "calibrate")
            calibration = load_calibrated(art)
            model = apply_fake_quant(calibration.apply(copy.deepcopy(lm.model)), calibration.layers)
            rows.append(
                {
                    "bits": bits,
                    "method": method + suffix,
                    "ppl": perplexity(model, windows, 4, method),
                    "calib_s": art.metrics["calibration_s"],
                    "settings": "imported (the time is the import's alone)"
                    if method == "checkpoint"
                    else _settings(cfg, art.metrics.get("dtype", args.dtype)),
                    **stamp,
                    **({"partition": art.metrics["partition"]} if method == "qvlm" else {}),
                }
            )
            print(rows[-1], flush=True)
    write(merge_earlier(rows), args)


ORDER = ("rtn", "omniquant", "qvlm", "signround", "checkpoint")
DEFAULTS = cal.CalibrateConfig()


def _budget(cfg) -> str:
    """What a row's name adds when its steps or compute differ from the defaults (rows are keyed by name)."""
    steps = cfg.epochs * math.ceil(cfg.nsamples / cfg.batch_size)
    default = DEFAULTS.epochs * math.ceil(cfg.nsamples / DEFAULTS.batch_size)
    out = "" if steps == default and cfg.batch_size == DEFAULTS.batch_size else f" {steps}x{cfg.batch_size}"
    return out + ("" if cfg.dtype == "auto" else f" {cfg.dtype}")


def _settings(cfg, dtype: str) -> str:
    steps = cfg.epochs * math.ceil(cfg.nsamples / cfg.batch_size)
    return f"{steps} steps x {cfg.batch_size} samples per block, lr {cfg.lr:.3g}, {dtype}"


def merge_earlier(rows: list[dict]) -> list[dict]:
    """This run's rows, plus the rows of docs/results/calibrate.json it did not redo (in bit-width order).
    Earlier rows of ours without their own settings get the ones the earlier file's setup named."""
    path = OUT / "calibrate.json"
    data = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    old = data.get("setup", {}).get("calibration")
    for r in data["rows"]:
        if _ours(r) and "settings" not in r and old:
            r["settings"] = old
    done = {(r["bits"], r["method"]) for r in rows}
    merged = rows + [r for r in data["rows"] if (r["bits"], r["method"]) not in done]
    order = ["fp", *ORDER]
    return sorted(
        merged,
        key=lambda r: (
            -r["bits"],
            order.index(r["method"].split()[0]) if r["method"].split()[0] in order else 9,
        ),
    )


def _ours(r: dict) -> bool:
    return r["method"].startswith(("omniquant", "qvlm", "signround"))


def _autoround_here(rows: list[dict], bits: int, device: str) -> dict | None:
    """AutoRound (50 iters, g64) at `bits` measured on `device`: its peer row (bench/peers.py), else its checkpoint
    imported and scored here, with the time of its own run from imports.json (bench/import_check.py)."""
    peer = next(
        (
            r
            for r in rows
            if (r["bits"], r["method"], r["device"]) == (bits, "AutoRound 50 iters g64", device)
        ),
        None,
    )
    if peer:
        return {**peer, "source": "bench/peers.py"}
    imported = next(
        (
            r
            for r in rows
            if (r["bits"], r["method"], r["device"]) == (bits, "checkpoint g64 (AutoRound 50 iters)", device)
        ),
        None,
    )
    path = OUT / "imports.json"
    runs = json.loads(path.read_text())["rows"] if path.is_file() else []
    run = next(
        (
            r
            for r in runs
            if (r["bits"], r["group"], r["iters"], r["device"]) == (bits, 64, 50, device)
            and r.get("autoround_s")
        ),
        None,
    )
    if imported and run:
        source = "its checkpoint imported and scored here; its time from imports.md"
        return {"ppl": imported["ppl"], "calib_s": run["autoround_s"], "source": source}
    return None


def verdicts(rows: list[dict]) -> list[str]:
    """The issue's goals, read off the table: ours vs the best peer per bit width; qvlm's W3 recovery and time."""
    out = []
    for bits in sorted({r["bits"] for r in rows if r["bits"] != 16}, reverse=True):
        same = [r for r in rows if r["bits"] == bits]
        ours = min((r for r in same if _ours(r)), key=lambda r: r["ppl"], default=None)
        peers = [r for r in same if r["method"] not in ("fp", "rtn") and not _ours(r)]
        if ours and peers:
            peer = min(peers, key=lambda r: r["ppl"])
            gap = peer["ppl"] - ours["ppl"]
            out.append(
                f"- W{bits}: best of ours {ours['method']} {ours['ppl']:.2f} vs best peer {peer['method']} "
                f"{peer['ppl']:.2f}: "
                + (f"ours ahead by {gap:.2f} ppl" if gap > 0 else f"ours behind by {-gap:.2f} ppl")
            )
    for bits in (3, 4):
        for mine in sorted(
            (r for r in rows if r["bits"] == bits and r["method"].startswith("signround")),
            key=lambda r: r["ppl"],
        ):
            peer = _autoround_here(rows, bits, mine["device"])
            if peer is None:
                continue
            ok = mine["ppl"] <= peer["ppl"] and mine["calib_s"] <= peer["calib_s"]
            out.append(
                f"- signround at W{bits} (goal: ppl <= AutoRound 50 iters g64 at no more of its calibration time, "
                f"same machine): {mine['method']} {mine['ppl']:.2f} in {mine['calib_s']:.0f} s vs AutoRound "
                f"{peer['ppl']:.2f} in {peer['calib_s']:.0f} s ({peer['source']}): {'met' if ok else 'NOT met'}."
            )
    qvlm = next((r for r in rows if r["bits"] == 3 and r["method"] == "qvlm"), None)
    omni = next((r for r in rows if r["bits"] == 3 and r["method"] == "omniquant"), None)
    if qvlm and omni:
        ok = qvlm["gap_recovered"] >= 0.8 and qvlm["calib_s"] <= omni["calib_s"]
        out.append(
            f"- qvlm at W3 (goal: >= 80% of RTN's gap at <= OmniQuant's calibration time): "
            f"{100 * qvlm['gap_recovered']:.0f}% in {qvlm['calib_s']:.0f} s (OmniQuant {100 * omni['gap_recovered']:.0f}% "
            f"in {omni['calib_s']:.0f} s): {'met' if ok else 'NOT met'}."
        )
    return out


def write(rows, args) -> None:
    fp = rows[0]["ppl"]
    for r in rows:
        rtn = next((x["ppl"] for x in rows if x["bits"] == r["bits"] and x["method"] == "rtn"), None)
        r["gap_recovered"] = (
            None if r["method"] in ("fp", "rtn") or rtn is None else (rtn - r["ppl"]) / (rtn - fp)
        )
    setup = {
        "model": "SmolLM2-135M-Instruct (default VLM's LM)",
        "group_size": "128 (rows naming another group size use it)",
        "eval": f"WikiText-2 test, second half, first {args.windows} x 512-token windows",
        "calibration": f"first half, {args.nsamples} x 512 tokens; steps, rate and compute per row",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "calibrate.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    partitions = [f"W{r['bits']}: {r['partition']}" for r in rows if r.get("partition")]
    lines = [
        "# Calibrate benchmark",
        "",
        "Produced by `python bench/calibrate.py`. " + "; ".join(f"{k}: {v}" for k, v in setup.items()) + ".",
        "",
        "| bits | method | held-out ppl | RTN gap recovered | calibration s | settings | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = "" if r["gap_recovered"] is None else f"{100 * r['gap_recovered']:.0f}%"
        lines.append(
            f"| {'FP' if r['bits'] == 16 else 'W' + str(r['bits'])} | {r['method']} | {r['ppl']:.2f} | {rec} "
            f"| {r['calib_s']:.1f} | {r.get('settings', '')} | {r.get('measured', 'earlier')}, {r.get('device', 'machine not recorded')} |"
        )
    if partitions:
        lines += ["", "qvlm blocks ([first, end) decoder layers): " + "; ".join(partitions)]
    lines += ["", *verdicts(rows)]
    (OUT / "calibrate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
