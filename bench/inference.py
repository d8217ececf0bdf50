"""Benchmark: deployment speed of the default VLM in one run. Decode tokens/s at batch 1 and time to
first token with an image (vision + embed + prefill) for ORT int4 (MatMulNBits at accuracy level 0
and 4, and our ai.qslaw op when built, exact and with a quantized lm_head), ORT fp32 (same folded weights,
plain MatMul) and PyTorch fp32; artifact bytes; and the memory-bandwidth bound of decode (bytes of decoder
weights read per token / a copy bandwidth measured in the same run). The table names the CPU, its ISA flags
and the kernel path our op ran. Writes docs/results/inference.{json,md}.

    python bench/inference.py [--calibration runs/bench-calibrate/w4-omniquant] [--tokens 32] [--reps 3]
"""

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from qslaw_pipe.cli_common import quiet_libraries
from qslaw_pipe.exports.onnx.runtime import OrtVlm, register_library
from qslaw_pipe.exports.torchao import load_torchao
from qslaw_pipe.kernels.build import library_path
from qslaw_pipe.kernels.isa import cpu_description, selected_isa
from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.folded import load_folded_model
from qslaw_pipe.stages import export as ex
from qslaw_pipe.stages import fold as fd

ROOT = Path(__file__).resolve().parents[1]
EXACT = "ORT int4 MatMulNBits acc0"
FP32 = "ORT fp32"
OURS = "ORT int4 ai.qslaw (ours)"
OURS_HEAD = "ORT int4 ai.qslaw (ours), int8-g32 lm_head"
OUT = ROOT / "docs" / "results"


def copy_bandwidth() -> float:
    """Bytes/s of a large numpy copy (read + write counted once each)."""
    src = np.ones(64 * 2**20, np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t)
    return 2 * src.nbytes / min(times)


def weight_bytes(path: Path) -> int:
    return sum(
        len(i.raw_data) or onnx.numpy_helper.to_array(i).nbytes
        for i in onnx.load(str(path)).graph.initializer
    )


def _agreeing_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens two greedy decodes share before they first differ."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


def time_ort(vlm: OrtVlm, ids, pixels, tokens: int) -> tuple[float, float, list[int]]:
    """(time to first token s, decode tokens/s, the greedy tokens), no early stop."""
    t0 = time.perf_counter()
    logits, past = vlm.step(
        vlm.inputs_embeds(ids, {"pixel_values": pixels}), np.ones_like(ids), vlm.empty_past(1)
    )
    ttft = time.perf_counter() - t0
    mask, out = np.ones_like(ids), []
    t1 = time.perf_counter()
    for _ in range(tokens):
        out.append(int(logits[0, -1].argmax()))
        mask = np.ones((1, mask.shape[1] + 1), np.int64)
        logits, past = vlm.step(
            vlm.embed.run(None, {"input_ids": np.array([[out[-1]]], np.int64)})[0], mask, past
        )
    return ttft, tokens / (time.perf_counter() - t1), out


@torch.no_grad()
def time_torch(lm, ids, pixels, tokens: int) -> tuple[float, float, list[int]]:
    t0 = time.perf_counter()
    pixel_values = torch.from_numpy(pixels).to(lm.model.dtype)
    out = lm.model(input_ids=torch.from_numpy(ids), pixel_values=pixel_values, use_cache=True)
    ttft = time.perf_counter() - t0
    past, logits, seq = out.past_key_values, out.logits, []
    t1 = time.perf_counter()
    for _ in range(tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        seq.append(int(token))
        out = lm.model(input_ids=token, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits
    return ttft, tokens / (time.perf_counter() - t1), seq


def profile_ops(export_dir: Path, ids, pixels, tokens: int) -> dict[str, float]:
    """Microseconds per decoded token spent in each op type of the decoder (onnxruntime's profiler, decode
    steps only: the prompt's step is left out)."""
    vlm = OrtVlm(export_dir, device="cpu")
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(export_dir / "profile")
    if vlm.spec["int4_op"] == "custom":
        register_library(opts)
    vlm.decoder = ort.InferenceSession(
        str(export_dir / "decoder.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    time_ort(vlm, ids, pixels, tokens)
    events = json.loads(Path(vlm.decoder.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    prompt_end = runs[0]["ts"] + runs[0]["dur"]
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > prompt_end:
            per_op[e["args"]["op_name"]] = per_op.get(e["args"]["op_name"], 0.0) + e["dur"] / tokens
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def prepare_run(args) -> Path:
    run = args.runs
    if not (run / "calibrate").exists():
        run.mkdir(parents=True, exist_ok=True)
        shutil.copytree(args.calibration / "calibrate", run / "calibrate")
    fd.run(fd.FoldConfig(source="calibrate"), run)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", type=Path, default=ROOT / "runs" / "bench-calibrate" / "w4-omniquant")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-inference")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    quiet_libraries()
    run = prepare_run(args)
    variants = {
        EXACT: ex.export_config(int4_op="matmulnbits"),
        "ORT int4 MatMulNBits acc0, traced decoder": ex.export_config(
            int4_op="matmulnbits", decoder="traced"
        ),
        "ORT int4 MatMulNBits acc4": ex.export_config(int4_op="matmulnbits", accuracy_level=4),
        "ORT int4 MatMulNBits acc4, int8 lm_head": ex.export_config(accuracy_level=4, lm_head="int8"),
        "ORT int4 MatMulNBits acc4, int4 lm_head": ex.export_config(accuracy_level=4, lm_head="int4"),
        FP32: ex.export_config(int4_op="fp32"),
    }
    if library_path():
        variants[OURS] = ex.export_config(int4_op="custom")
        variants[OURS_HEAD] = ex.export_config(int4_op="custom", lm_head="int8-g32")
        variants["ORT int4 ai.qslaw (ours), int8 lm_head"] = ex.export_config(
            int4_op="custom", lm_head="int8"
        )
        variants["ORT int4 ai.qslaw (ours), int4 lm_head"] = ex.export_config(
            int4_op="custom", lm_head="int4"
        )
    dirs = {name: ex.run(cfg, run).artifact.path for name, cfg in variants.items()}
    sample = load_easyvqa("test")[0]
    image = open_image(sample.image)
    runners = {name: OrtVlm(d, device="cpu") for name, d in dirs.items()}
    ids, images = next(iter(runners.values())).encode(sample.prompt, image)
    pixels = images["pixel_values"]
    torch_lm = load_folded_model(run / "fold")
    torchao_lm = load_torchao(ex.run(ex.export_config(format="torchao"), run).artifact.path)
    with torch.no_grad():
        ref = torch_lm.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels)).logits
        tao_pixels = torch.from_numpy(pixels).to(torchao_lm.model.dtype)
        tao = torchao_lm.model(input_ids=torch.from_numpy(ids), pixel_values=tao_pixels).logits.float()
    torchao_rel_err = float((tao - ref).abs().max() / ref.abs().max())
    torch_runners = {
        "PyTorch fp32": torch_lm,
        "torchao int4 (Int4OpaqueTensor, bf16 activations)": torchao_lm,
    }
    results = {name: [] for name in [*runners, *torch_runners]}
    for _ in range(args.reps):  # round robin, so machine noise hits every variant alike
        for name, vlm in runners.items():
            results[name].append(time_ort(vlm, ids, pixels, args.tokens))
        for name, lm in torch_runners.items():
            results[name].append(time_torch(lm, ids, pixels, args.tokens))
    bandwidth = copy_bandwidth()
    profiles = {
        name: profile_ops(dirs[name], ids, pixels, args.tokens) for name in (FP32, OURS) if name in dirs
    }
    rows = []
    reference = results["PyTorch fp32"][0][2]  # the folded model's own greedy tokens
    ref_np = ref.numpy()
    for name, times in results.items():
        row = {
            "variant": name,
            "ttft_s": statistics.median(t[0] for t in times),
            "decode_tok_s": statistics.median(t[1] for t in times),
            "decode_tok_s_reps": [t[1] for t in times],
            "tokens_as_folded": _agreeing_prefix(times[0][2], reference),
        }
        if name in runners:  # prompt logits (with the image) against the folded PyTorch model
            vlm = runners[name]
            logits = vlm.step(vlm.inputs_embeds(ids, images), np.ones_like(ids), vlm.empty_past(1))[0]
            row["logits_rel_err"] = float(np.abs(logits - ref_np).max() / np.abs(ref_np).max())
        if name in dirs:
            row["decoder_weight_bytes"] = weight_bytes(dirs[name] / "decoder.onnx")
            row["bound_tok_s"] = bandwidth / row["decoder_weight_bytes"]
        rows.append(row)
        print(row, flush=True)
    write(rows, run, args, bandwidth, torch_lm, ids.shape[1], torchao_rel_err, profiles)


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def write(
    rows,
    run: Path,
    args,
    bandwidth: float,
    torch_lm,
    prompt_tokens: int,
    torchao_rel_err: float,
    profiles: dict,
) -> None:
    fold = json.loads((run / "fold" / "manifest.json").read_text())["metrics"]
    fp16_lm = 2 * sum(p.numel() for p in torch_lm.model.get_decoder().parameters()) + 2 * (
        0
        if torch_lm.model.config.get_text_config().tie_word_embeddings
        else torch_lm.model.lm_head.weight.numel()
    )
    by_name = {r["variant"]: r for r in rows}
    fp32 = by_name[FP32]
    for r in (
        rows
    ):  # ratios within each round (the variants of a round ran minutes apart at most), then the median
        per_rep = [a / b for a, b in zip(r["decode_tok_s_reps"], fp32["decode_tok_s_reps"], strict=True)]
        r["over_ort_fp32"] = statistics.median(per_rep)
        r["over_ort_fp32_range"] = [min(per_rep), max(per_rep)]
        if "decoder_weight_bytes" in r:
            r["bytes_over_fp16_lm"] = r["decoder_weight_bytes"] / fp16_lm
    int4_rows = [r for r in rows if r["variant"].startswith("ORT int4")]
    best = max(int4_rows, key=lambda r: r["decode_tok_s"])
    smallest = min(int4_rows, key=lambda r: r["decoder_weight_bytes"])
    exact = by_name[EXACT]
    ours, ours_head = by_name.get(OURS), by_name.get(OURS_HEAD)
    OUT.mkdir(parents=True, exist_ok=True)
    setup = {
        "model": "default VLM, LM W4 g128 (OmniQuant), folded",
        "prompt_tokens_with_image": prompt_tokens,
        "decode_tokens": args.tokens,
        "reps": args.reps,
        "copy_bandwidth_GBps": round(bandwidth / 1e9, 2),
        "threads": torch.get_num_threads(),
        "fp16_lm_MB": round(fp16_lm / 1e6, 1),
        **cpu_description(),
        "ours_kernel_path": selected_isa(library_path()) if library_path() else "not built",
    }
    summary = {
        "exact_int4_over_fp32_decode": exact["over_ort_fp32"],
        "ours_exact_over_fp32_decode": ours and ours["over_ort_fp32"],
        "ours_exact_greedy_as_folded": ours and ours["tokens_as_folded"],
        "ours_bounded_head_over_fp32_decode": ours_head and ours_head["over_ort_fp32"],
        "ours_bounded_head_logits_rel_err": ours_head and ours_head["logits_rel_err"],
        "best_int4": best["variant"],
        "best_int4_over_fp32_decode": best["over_ort_fp32"],
        "best_int4_fraction_of_bound": best["decode_tok_s"] / best["bound_tok_s"],
        "int4_linears_over_fp16": fold["quantized_ratio"],
        "folded_head_decoder_bytes_over_fp16_lm": exact["bytes_over_fp16_lm"],
        "smallest_int4": smallest["variant"],
        "smallest_decoder_bytes_over_fp16_lm": smallest["bytes_over_fp16_lm"],
    }
    (OUT / "inference.json").write_text(
        json.dumps(
            {"setup": setup, "rows": rows, "summary": summary, "decode_profile_us": profiles}, indent=2
        )
    )
    lines = [
        "# Inference benchmark (CPU, batch 1)",
        "",
        "Produced by `python bench/inference.py`. " + "; ".join(f"{k}: {v}" for k, v in setup.items()) + ".",
        "ORT rows run the built decoder (exports/onnx/decoder.py: GroupQueryAttention, SkipSimplifiedLayerNormalization, "
        "fused q/k/v and gate/up Linears) unless marked traced (torch.onnx.export of the transformers modules). "
        "acc0: MatMulNBits with fp32 activations (exact); acc4: int8 activations (approximate); ai.qslaw: our op, fp32 "
        "activations (exact). int8 / int4 lm_head: round-to-nearest codes in groups of 128 / 32 at export (`--lm-head`); "
        "int8-g32: groups of 32; otherwise the tied fp32 lm_head. "
        "Logits error: max |ORT - folded "
        "PyTorch| / max |folded PyTorch| over the prompt's logits. Greedy tokens: how many decoded tokens agree with the "
        f"folded PyTorch model's before the first difference (of {args.tokens}). Decode tok/s: median over {args.reps} "
        "rounds (every variant once per round, round robin); vs ORT fp32: the median of the per-round ratios.",
        "",
        "| variant | time to first token (s, with image) | decode tok/s | vs ORT fp32 (range over rounds) | decoder weight MB | x fp16 LM "
        "| bandwidth bound tok/s | % of bound | logits error | greedy tokens as folded |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        has = "decoder_weight_bytes" in r
        mb = f"{r['decoder_weight_bytes'] / 1e6:.1f}" if has else "-"
        ratio = f"{r['bytes_over_fp16_lm']:.3f}" if has else "-"
        bound = f"{r['bound_tok_s']:.1f}" if has else "-"
        pct = f"{100 * r['decode_tok_s'] / r['bound_tok_s']:.0f}%" if has else "-"
        err = f"{r['logits_rel_err']:.1e}" if "logits_rel_err" in r else "-"
        lines.append(
            f"| {r['variant']} | {r['ttft_s']:.3f} | {r['decode_tok_s']:.1f} | {r['over_ort_fp32']:.2f}x "
            f"({r['over_ort_fp32_range'][0]:.2f}-{r['over_ort_fp32_range'][1]:.2f}) | {mb} | "
            f"{ratio} | {bound} | {pct} | {err} | {r['tokens_as_folded']}/{args.tokens} |"
        )
    lines.append("")
    if ours:
        exact_ok = ours["over_ort_fp32"] >= 2 and ours["tokens_as_folded"] == args.tokens
        lines.append(
            f"- Exact int4 decode with our op (goal >= 2.0x ORT fp32, greedy {args.tokens}/{args.tokens} as folded): "
            f"{ours['over_ort_fp32']:.2f}x, {ours['tokens_as_folded']}/{args.tokens}: {_verdict(exact_ok)} "
            f"(MatMulNBits acc0: {exact['over_ort_fp32']:.2f}x)."
        )
    if ours_head:
        head_ok = ours_head["over_ort_fp32"] >= 2.5 and ours_head["logits_rel_err"] <= 1e-2
        lines.append(
            f"- With the bounded lm_head (int8 in groups of 32; goal >= 2.5x at logit error <= 1e-2): "
            f"{ours_head['over_ort_fp32']:.2f}x at {ours_head['logits_rel_err']:.1e}, greedy "
            f"{ours_head['tokens_as_folded']}/{args.tokens}: {_verdict(head_ok)}."
        )
    lines += [
        f"- Decode vs ORT fp32 (earlier goal >= 3x): exact int4 ({EXACT}) {summary['exact_int4_over_fp32_decode']:.2f}x; "
        f"fastest int4 ({best['variant']}) {summary['best_int4_over_fp32_decode']:.2f}x: "
        f"{_verdict(summary['best_int4_over_fp32_decode'] >= 3)}.",
        f"- Fastest int4 at {100 * summary['best_int4_fraction_of_bound']:.0f}% of its bandwidth bound (goal: within 2x, "
        f"i.e. >= 50%: {_verdict(summary['best_int4_fraction_of_bound'] >= 0.5)}).",
        f"- Bytes (goal <= 0.3x the fp16 LM): quantized Linears {summary['int4_linears_over_fp16']:.3f}x their fp16 bytes; "
        f"decoder graph with the folded fp32 lm_head {summary['folded_head_decoder_bytes_over_fp16_lm']:.3f}x "
        f"({_verdict(summary['folded_head_decoder_bytes_over_fp16_lm'] <= 0.3)}); smallest ({smallest['variant']}) "
        f"{summary['smallest_decoder_bytes_over_fp16_lm']:.3f}x ({_verdict(summary['smallest_decoder_bytes_over_fp16_lm'] <= 0.3)}).",
        "- torchao int4: the exported IntxUnpackedToInt8Tensor checkpoint packed into Int4OpaqueTensor at load, bf16 "
        "activations (load_torchao's default); its prompt "
        f"logits differ from the folded fp32 model by {torchao_rel_err:.1e} (max, relative).",
        "- CUDA: this table is the CPU's (onnxruntime's CPU EP). No GPU was lent to the session that produced it, so the "
        "CUDA EP rows (fp16 decoder vs int4, and the 7B-shaped LM) are not measured.",
    ]
    if profiles:
        ops = list(dict.fromkeys(op for prof in profiles.values() for op in prof))
        lines += [
            "",
            "Where a decoded token's time goes (onnxruntime's profiler, one more decode of the same prompt, "
            "microseconds per token by op type; profiling adds a little per node):",
            "",
            "| op type | " + " | ".join(profiles) + " |",
            "|---" * (1 + len(profiles)) + "|",
            *(
                f"| {op} | " + " | ".join(f"{prof.get(op, 0):.0f}" for prof in profiles.values()) + " |"
                for op in ops
            ),
            "| total | " + " | ".join(f"{sum(prof.values()):.0f}" for prof in profiles.values()) + " |",
        ]
    (OUT / "inference.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
