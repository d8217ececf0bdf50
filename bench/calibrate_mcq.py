"""Benchmark: multiple-choice accuracy of the calibrated int-k VLM without tuning its LM (issue: qvlm >=
omniquant >= rtn). Each calibrate artifact of bench/calibrate.py (runs/bench-calibrate/w<bits>-<method>) gets
`tune --method frozen` (the LM stays at its calibrated int-k weights; only the projector learns, as
bench/accuracy.py's frozen rows: 150 steps of batch 4, seed 0) and is scored on the same easy-VQA test
questions with 95% Wilson intervals. `--direct` scores the calibrated VLM as it is, nothing tuned (the aligned
projector, the LM's Linears replaced by their quantized values): ours from the calibrate artifacts, and the peers
(GPTQ, AutoRound, HQQ) from the weights `bench/peers.py --save-weights` kept (runs/bench-peers/w<bits>-<peer>.pt),
so ours and the peers are compared like for like. Writes docs/results/calibrate_mcq.{json,md} (both kinds of rows).

    python bench/calibrate_mcq.py [--bits 3] [--methods rtn,omniquant,qvlm] [--steps 150] [--limit 500] [--direct]
"""

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


PEER_NAMES = {"gptq": "llm-compressor GPTQ g64", "autoround": "AutoRound g64", "hqq": "HQQ g64"}


def direct_rows(args, bits: int, wilson) -> list[dict]:
    """The calibrated VLM scored as it is: ours (our calibrate artifacts) and every peer whose weights were kept."""
    import torch

    from qslaw_pipe.paths import default_model_dir
    from qslaw_pipe.pipeline.artifact import read_artifact
    from qslaw_pipe.pipeline.model import load_model
    from qslaw_pipe.pipeline.qparams import apply_fake_quant, load_calibrated
    from qslaw_pipe.stages.evaluate import mcq
    from qslaw_pipe.stages.evaluate.answers import greedy_answers
    from qslaw_pipe.stages.evaluate.scoring import score

    base = load_model(default_model_dir())
    samples = mcq.mcq_samples(mcq.McqConfig(data="easyvqa", limit=args.limit, seed=0))

    def ours(method):
        return lambda model: apply_fake_quant(
            model, load_calibrated(read_artifact(args.calibrations / f"w{bits}-{method}", "calibrate")).layers
        )

    def peer(path):
        def load(model):
            decoder = model.get_decoder()
            for name, w in torch.load(path).items():
                decoder.get_parameter(name).data.copy_(w)
            return model

        return load

    variants = {}
    for m in args.methods.split(","):
        if m == "fp":  # the aligned VLM as it is: the ceiling of the untuned rows
            variants["fp"] = lambda model: model
        elif m in PEER_NAMES:
            path = args.peers / f"w{bits}-{m}.pt"
            if not path.is_file():
                raise SystemExit(
                    f"{path} not found; run `python bench/peers.py --bits {bits} --save-weights` first"
                )
            variants[PEER_NAMES[m]] = peer(path)
        else:
            variants[m] = ours(m)
    rows = []
    for name, quantize in variants.items():
        lm = copy.copy(base)
        lm.model = quantize(copy.deepcopy(base.model))
        m = score(samples, greedy_answers(lm, samples, 4, 16))
        hits, n = round(m["accuracy"] * m["n"]), m["n"]
        rows.append(
            {
                "bits": 16 if name == "fp" else bits,
                "method": name,
                "tuned": "nothing",
                "accuracy": m["accuracy"],
                "n": n,
                "ci95": wilson(hits, n),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="3")
    ap.add_argument(
        "--methods",
        help="rtn,omniquant,qvlm (default); with --direct also fp and the peers gptq, autoround, hqq "
        "(default: all of them)",
    )
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--calibrations", type=Path, default=ROOT / "runs" / "bench-calibrate")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-calibrate-mcq")
    ap.add_argument("--peers", type=Path, default=ROOT / "runs" / "bench-peers")
    ap.add_argument(
        "--direct", action="store_true", help="Score the calibrated VLMs untuned (ours and the peers)."
    )
    args = ap.parse_args()
    args.methods = args.methods or (
        "fp,rtn,omniquant,qvlm,gptq,autoround,hqq" if args.direct else "rtn,omniquant,qvlm"
    )
    sys.path.insert(0, str(Path(__file__).parent))
    from accuracy import wilson

    from qslaw_pipe.cli_common import quiet_libraries
    from qslaw_pipe.paths import default_model_dir, default_text_path
    from qslaw_pipe.pipeline.sysinfo import machine_name
    from qslaw_pipe.stages import tune as tn
    from qslaw_pipe.stages.evaluate import mcq

    quiet_libraries()
    rows, start = [], time.perf_counter()
    for bits in (int(b) for b in args.bits.split(",")):
        if args.direct:
            rows += direct_rows(args, bits, wilson)
            continue
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
                {
                    "bits": bits,
                    "method": method,
                    "tuned": f"projector ({args.steps} steps)",
                    "accuracy": m["accuracy"],
                    "n": n,
                    "ci95": wilson(hits, n),
                }
            )
            print(rows[-1], flush=True)
    stamp = {"measured": time.strftime("%Y-%m-%d"), "device": machine_name("cpu")}
    rows = merge_earlier([{**r, **stamp} for r in rows])
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "calibrate_mcq.json").write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))
    lines = [
        "# Calibrated VLM, LM not tuned: easy-VQA accuracy",
        "",
        "Produced by `python bench/calibrate_mcq.py` (this run: "
        f"`--bits {args.bits} --limit {args.limit}{' --direct' if args.direct else f' --steps {args.steps}'}`, "
        f"{(time.perf_counter() - start) / 60:.1f} min). Rows tuned `projector`: the calibrate artifact of "
        "bench/calibrate.py, then `tune --method frozen` (the projector alone learns; the LM keeps its calibrated "
        "int-k weights). Rows tuned `nothing` (`--direct`): the aligned VLM with its LM's Linears replaced by their "
        "quantized values, ours from our calibrate artifacts (g128), the peers from the weights bench/peers.py kept "
        "(g64). The same seeded easy-VQA test questions, greedy letter, 95% Wilson intervals.",
        "",
        "| bits | calibration | tuned | easy-VQA % [95% CI] | questions | measured |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {'FP' if r['bits'] == 16 else 'W' + str(r['bits'])} | {r['method']} | {r['tuned']} | {100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, "
        f"{100 * r['ci95'][1]:.1f}] | {r['n']} | {r['measured']}, {r['device']} |"
        for r in rows
    ]
    lines += ["", *order_verdicts(rows)]
    (OUT / "calibrate_mcq.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def merge_earlier(rows: list[dict]) -> list[dict]:
    """This run's rows and the rows of an earlier calibrate_mcq.json it did not redo (those written before rows
    carried their own stamp get the file's)."""
    path = OUT / "calibrate_mcq.json"
    old = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    default = {
        "tuned": f"projector ({old.get('steps', 150)} steps)",
        "measured": "earlier",
        "device": old.get("device", "?"),
    }
    earlier = [{**default, **r} for r in old["rows"]]
    done = {(r["bits"], r["method"], r["tuned"]) for r in rows}
    return [r for r in earlier if (r["bits"], r["method"], r["tuned"]) not in done] + rows


def order_verdicts(rows: list[dict]) -> list[str]:
    """The issue's goal, qvlm >= omniquant >= rtn, per bit width and kind of row."""
    out = []
    for bits, tuned in sorted({(r["bits"], r["tuned"]) for r in rows}):
        acc = {r["method"]: r["accuracy"] for r in rows if r["bits"] == bits and r["tuned"] == tuned}
        if {"rtn", "omniquant", "qvlm"} <= set(acc):
            ok = acc["qvlm"] >= acc["omniquant"] >= acc["rtn"]
            out.append(
                f"- W{bits}, tuned {tuned}: qvlm {100 * acc['qvlm']:.1f} >= omniquant {100 * acc['omniquant']:.1f} "
                f">= rtn {100 * acc['rtn']:.1f}: {'met' if ok else 'NOT met'}."
            )
    return out


if __name__ == "__main__":
    main()
