"""Benchmark: the torchao int4 export against the model it replaces, on the CPU (issue: torchao decodes slower
than fp32 PyTorch). Same prompt (an easy-VQA question with its image), same machine, round robin over the
variants: PyTorch fp32 and bf16 (the folded model), torchao int4 with fp32 activations (the exact path) and with
bf16 activations (load_torchao's default). Time to first token (prompt with image), greedy decode tok/s, the
prompt logits' error against the folded fp32 model, and how many greedy tokens agree with it. Writes
docs/results/torchao.{json,md}.

    python bench/torchao_speed.py [--calibration runs/bench-calibrate/<a W4 run>] [--tokens 32] [--reps 3]
"""

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from qslaw_pipe.cli_common import quiet_libraries
from qslaw_pipe.exports.torchao import load_torchao
from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.folded import load_folded_model
from qslaw_pipe.pipeline.prompt import chat_prompt
from qslaw_pipe.stages import export as ex
from qslaw_pipe.stages import fold as fd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


def time_torch(model, ids, pixels, tokens: int) -> tuple[float, float, list[int], torch.Tensor]:
    dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, pixel_values=pixels.to(dtype), use_cache=True)
        ttft = time.perf_counter() - t0
        prompt_logits = out.logits.float()
        past, logits, seq = out.past_key_values, out.logits, []
        t1 = time.perf_counter()
        for _ in range(tokens):
            token = logits[:, -1].argmax(-1, keepdim=True)
            seq.append(int(token))
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits
    return ttft, tokens / (time.perf_counter() - t1), seq, prompt_logits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", type=Path, default=ROOT / "runs" / "bench-calibrate" / "w4-omniquant")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-torchao")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from qslaw_pipe.kernels.isa import cpu_description
    from qslaw_pipe.pipeline.sysinfo import machine_name

    quiet_libraries()
    run = args.runs
    if not (run / "calibrate").exists():
        run.mkdir(parents=True, exist_ok=True)
        shutil.copytree(args.calibration / "calibrate", run / "calibrate")
    fd.run(fd.FoldConfig(source="calibrate"), run)
    out = ex.run(ex.export_config(format="torchao"), run).artifact.path
    folded = load_folded_model(run / "fold")
    sample = load_easyvqa("test")[0]
    text = chat_prompt(folded.processor, sample.prompt, with_image=True)
    inputs = folded.processor(images=open_image(sample.image), text=text, return_tensors="pt")
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    bf16 = load_folded_model(run / "fold")
    bf16.model.to(torch.bfloat16)
    t0 = time.perf_counter()
    tao_bf16 = load_torchao(out)
    load_s = {"torchao int4, bf16 activations (default)": time.perf_counter() - t0}
    t0 = time.perf_counter()
    tao_fp32 = load_torchao(out, dtype="fp32")
    load_s["torchao int4, fp32 activations (exact)"] = time.perf_counter() - t0
    runners = {
        "PyTorch fp32 (folded)": folded.model,
        "PyTorch bf16 (folded)": bf16.model,
        "torchao int4, fp32 activations (exact)": tao_fp32.model,
        "torchao int4, bf16 activations (default)": tao_bf16.model,
    }
    results = {name: [] for name in runners}
    for _ in range(args.reps):  # round robin: machine noise hits every variant alike
        for name, model in runners.items():
            results[name].append(time_torch(model, ids, pixels, args.tokens))
    ref_seq, ref_logits = results["PyTorch fp32 (folded)"][0][2], results["PyTorch fp32 (folded)"][0][3]
    rows = []
    for name, times in results.items():
        seq, logits = times[0][2], times[0][3]
        agree = next((i for i, (a, b) in enumerate(zip(seq, ref_seq, strict=True)) if a != b), len(seq))
        rows.append(
            {
                "variant": name,
                "ttft_s": statistics.median(t[0] for t in times),
                "decode_tok_s": statistics.median(t[1] for t in times),
                "decode_tok_s_reps": [t[1] for t in times],
                "logits_rel_err": float((logits - ref_logits).abs().max() / ref_logits.abs().max()),
                "tokens_as_folded": agree,
                "load_s": load_s.get(name),
            }
        )
        print(rows[-1], flush=True)
    setup = {
        "calibration": str(
            args.calibration.relative_to(ROOT) if args.calibration.is_relative_to(ROOT) else args.calibration
        ),
        "prompt_tokens_with_image": int(ids.shape[1]),
        "decode_tokens": args.tokens,
        "reps": args.reps,
        "threads": torch.get_num_threads(),
        "cpu": cpu_description(),
        "machine": machine_name("cpu"),
        "measured": time.strftime("%Y-%m-%d"),
    }
    write(rows, setup)


def write(rows: list[dict], setup: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "torchao.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    by = {r["variant"]: r for r in rows}
    fp32, bf16 = by["PyTorch fp32 (folded)"], by["PyTorch bf16 (folded)"]
    fast = by["torchao int4, bf16 activations (default)"]
    lines = [
        "# torchao int4 export vs PyTorch (CPU, batch 1)",
        "",
        "Produced by `python bench/torchao_speed.py`. "
        + "; ".join(f"{k}: {v}" for k, v in setup.items())
        + ".",
        "Decode tok/s and time to first token: medians over the reps (variants round robin). Logits error: max |x -",
        "folded fp32| / max |folded fp32| over the prompt's logits. Greedy tokens: how many of the decoded tokens",
        "agree with the folded fp32 model's before the first difference.",
        "",
        "| variant | time to first token (s, with image) | decode tok/s | decode reps | logits error | greedy tokens as folded | load s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reps = ", ".join(f"{x:.1f}" for x in r["decode_tok_s_reps"])
        load = "" if r["load_s"] is None else f"{r['load_s']:.1f}"
        lines.append(
            f"| {r['variant']} | {r['ttft_s']:.3f} | {r['decode_tok_s']:.1f} | {reps} | {r['logits_rel_err']:.1e} "
            f"| {r['tokens_as_folded']}/{setup['decode_tokens']} | {load} |"
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines += [
        "",
        f"- Decode >= 1.5x PyTorch at the same activation dtype (bf16): {fast['decode_tok_s'] / bf16['decode_tok_s']:.2f}x: "
        f"{verdict(fast['decode_tok_s'] >= 1.5 * bf16['decode_tok_s'])}.",
        f"- Decode >= PyTorch fp32: {fast['decode_tok_s'] / fp32['decode_tok_s']:.2f}x: "
        f"{verdict(fast['decode_tok_s'] >= fp32['decode_tok_s'])}.",
        f"- Time to first token within 1.5x PyTorch fp32's: {fast['ttft_s'] / fp32['ttft_s']:.2f}x: "
        f"{verdict(fast['ttft_s'] <= 1.5 * fp32['ttft_s'])}.",
        f"- Logits within bf16 rounding of the folded model: {fast['logits_rel_err']:.1e} (PyTorch bf16: "
        f"{bf16['logits_rel_err']:.1e}); greedy tokens {fast['tokens_as_folded']}/{setup['decode_tokens']} as folded.",
    ]
    (OUT / "torchao.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
