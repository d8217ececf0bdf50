"""Benchmark: QSLAW at LLaVA-1.5-7B's shape. Peak memory and median step time of qslaw, fp, qlora and
frozen on one device, each in its own process (so every peak is that method's alone), plus OmniQuant's
calibration time and peak memory for one decoder block. Random weights built from config (Llama-2-7B
decoder, a CLIP ViT-L/14-336-shaped tower, LLaVA's 2-layer projector): nothing is downloaded.
Writes docs/results/scale.{json,md} with the device's name.

    python bench/scale.py                                   # one GPU, full 32-layer shape, batch 4 x (576 + 128)
    python bench/scale.py --device cpu --layers 2 --batch 1 --text-tokens 32 --steps 2 --calib-samples 8
"""

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from qslaw_pipe.pipeline.sysinfo import machine_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
METHODS = ("fp", "qslaw", "qlora", "frozen")
GOALS = "QSLAW peak <= 0.25x fp (same layers) and <= 24 GB at 32 layers; step <= 0.9x fp and <= qlora; <= 2.1 bytes per Linear weight; one 7B block calibrated (128 x 2048, 2 epochs) in <= 30 s"


def llava_7b_config(layers: int, image_size: int):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=image_size,
        patch_size=14,
        projection_dim=768,
    )
    text = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32064,
        max_position_embeddings=4096,
    )
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000)
    cfg.image_seq_length = (image_size // 14) ** 2
    cfg._attn_implementation = "sdpa"
    return cfg


def build(args, compute, dtype: torch.dtype):
    """The random-weight model on the device, weights in `dtype` (created there: no host copy)."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in `dtype` on the device: no fp32 or host copy on the way
    try:
        with compute.device:
            model = LlavaForConditionalGeneration(llava_7b_config(args.layers, args.image_size))
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def rtn(model, names: list[str]):
    from qslaw_pipe.kernels.quant import rtn_qparams
    from qslaw_pipe.pipeline.qparams import LayerQParams

    out = {}
    for n in names:
        w = model.get_submodule(n).weight.detach()
        delta, zp = rtn_qparams(w, 4, 128)
        out[n] = LayerQParams(delta, zp, 4, 128)
    return out


def batch(args, image_tokens: int) -> dict:
    """batch x (image tokens + text tokens); the text tokens are scored (an answer of that length)."""
    g = torch.Generator().manual_seed(1)
    text = torch.randint(3, 31999, (args.batch, args.text_tokens), generator=g)
    ids = torch.cat([torch.full((args.batch, image_tokens), 32000), text], 1)
    labels = torch.cat([torch.full((args.batch, image_tokens), -100), text], 1)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "is_text": torch.zeros(args.batch, dtype=torch.bool),
        "pixel_values": torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g),
    }


def bytes_per_weight(model, names: list[str]) -> float:
    """Bytes the tuned form keeps per Linear weight (parameters + buffers, no optimizer state)."""
    total = sum(
        t.numel() * t.element_size()
        for n in names
        for t in [*model.get_submodule(n).parameters(), *model.get_submodule(n).buffers()]
    )
    return total / sum(
        model.get_submodule(n).in_features * model.get_submodule(n).out_features for n in names
    )


def peak_mb(compute) -> float:
    from qslaw_pipe.pipeline.sysinfo import peak_rss_mb

    return torch.cuda.max_memory_allocated(compute.device) / 2**20 if compute.cuda else peak_rss_mb()


def one_method(args, compute) -> dict:
    """Child process: build `args.one`'s form, train `args.steps` timed steps after one warm-up."""
    from qslaw_pipe.pipeline.targeting import quantized_names, resolve_targets
    from qslaw_pipe.stages.tune.loop import train_step
    from qslaw_pipe.stages.tune.methods import prepare_method

    method = args.one
    model = build(args, compute, torch.float32 if method == "fp" else compute.dtype)
    names = quantized_names(resolve_targets(model))
    qparams = rtn(model, names) if method in ("qslaw", "frozen") else None
    prepare_method(model, method, names, qparams, compiled=args.compile, compute_dtype=compute.dtype)
    if args.grad_checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    per_weight = bytes_per_weight(model, names)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    data, times = batch(args, model.config.image_seq_length), []
    for step in range(args.steps + 1):  # step 0 warms up (compilation, allocator), not timed
        if compute.cuda:
            torch.cuda.synchronize(compute.device)
        t = time.perf_counter()
        train_step(model, opt, data, compute)
        if compute.cuda:
            torch.cuda.synchronize(compute.device)
        if step:
            times.append(time.perf_counter() - t)
    return {
        "method": method,
        "layers": args.layers,
        "peak_mb": peak_mb(compute),
        "step_s": statistics.median(times),
        "bytes_per_weight": per_weight,
    }


def one_block(args, compute) -> dict:
    """Child process: OmniQuant on one random 7B-shaped decoder block, activations in host memory."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from qslaw_pipe.stages.calibrate.config import CalibrateConfig
    from qslaw_pipe.stages.calibrate.omniquant import calibrate_block

    text = llava_7b_config(1, args.image_size).text_config
    text._attn_implementation = "sdpa"
    torch.manual_seed(0)
    block = LlamaDecoderLayer(text, 0).eval().requires_grad_(False)
    hidden = torch.randn(args.calib_samples, args.calib_seqlen, text.hidden_size)
    pos = torch.arange(args.calib_seqlen)[None]
    kwargs = {"position_embeddings": LlamaRotaryEmbedding(text)(hidden[:1], pos), "position_ids": pos}
    names = [n for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)]
    cfg = CalibrateConfig(nsamples=args.calib_samples, seqlen=args.calib_seqlen, epochs=args.calib_epochs)
    t = time.perf_counter()
    calibrate_block(block, names, hidden, hidden.clone(), kwargs, cfg, 0, bar=False, compute=compute)
    if compute.cuda:
        torch.cuda.synchronize(compute.device)
    return {
        "block_s": time.perf_counter() - t,
        "peak_mb": peak_mb(compute),
        "samples": args.calib_samples,
        "seqlen": args.calib_seqlen,
        "epochs": args.calib_epochs,
    }


def child(args) -> None:
    from qslaw_pipe.pipeline.device import resolve

    compute = resolve(args.device, args.dtype)
    try:
        result = one_block(args, compute) if args.one == "omniquant-block" else one_method(args, compute)
    except torch.OutOfMemoryError:
        result = {"method": args.one, "layers": args.layers, "oom": True}
    print(json.dumps(result))


def run_child(args, one: str, layers: int) -> dict:
    cmd = [sys.executable, __file__, "--one", one, "--layers", str(layers)]
    for k in (
        "device",
        "dtype",
        "batch",
        "text_tokens",
        "image_size",
        "steps",
        "calib_samples",
        "calib_seqlen",
        "calib_epochs",
    ):
        cmd += [f"--{k.replace('_', '-')}", str(getattr(args, k))]
    cmd += ["--compile"] if args.compile else ["--no-compile"]
    cmd += ["--grad-checkpoint"] if args.grad_checkpoint else []
    print("+", " ".join(cmd[2:]), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{one} at {layers} layers failed:\n{res.stderr[-3000:]}")
    result = json.loads(res.stdout.strip().splitlines()[-1])
    print("  ", result, flush=True)
    return result


def table(rows: list[dict], block: dict, meta: dict) -> str:
    fp = {r["layers"]: r for r in rows if r["method"] == "fp" and not r.get("oom")}
    lines = [
        f"# QSLAW at LLaVA-1.5-7B's shape ({meta['device']})",
        "",
        f"`python bench/scale.py {meta['argv']}`; {meta['when']}; torch {meta['torch']}. Random weights from config; "
        f"batch {meta['batch']} x ({meta['image_tokens']} image + {meta['text_tokens']} text tokens, the text scored); "
        f"compute dtype {meta['dtype']}; median of {meta['steps']} steps after one warm-up step; every method in its own process.",
        "Peak memory: torch's peak GPU allocation on CUDA, the process's peak RSS on the CPU (it includes the Python runtime and libraries).",
        "",
        "| method | layers | peak GB | peak / fp | bytes per Linear weight | step s | step / fp |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("oom"):
            lines.append(f"| {r['method']} | {r['layers']} | OOM | | | | |")
            continue
        ref = fp.get(r["layers"])
        mem, step = (f"{r[k] / ref[k]:.2f}" if ref else "-" for k in ("peak_mb", "step_s"))
        lines.append(
            f"| {r['method']} | {r['layers']} | {r['peak_mb'] / 1024:.2f} | {mem} | {r['bytes_per_weight']:.3f} | {r['step_s']:.3f} | {step} |"
        )
    lines += [
        "",
        f"OmniQuant, one 7B-shaped decoder block ({block['samples']} samples x {block['seqlen']} tokens, {block['epochs']} epochs, "
        f"activations in host memory): {block['block_s']:.1f} s, peak {block['peak_mb'] / 1024:.2f} GB.",
        "",
        f"Goals (issue): {GOALS}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--layers", type=int, default=32, help="Decoder layers (Llama-2-7B has 32).")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--text-tokens", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=336, help="336 -> 576 image tokens.")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--calib-seqlen", type=int, default=2048)
    ap.add_argument("--calib-epochs", type=int, default=2)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return child(args)
    rows = [run_child(args, m, args.layers) for m in args.methods.split(",")]
    fp = next((r for r in rows if r["method"] == "fp"), None)
    layers = args.layers
    while (
        fp is not None and fp.get("oom") and layers > 1
    ):  # fp at the largest layer count that fits, qslaw beside it
        layers //= 2
        fp = run_child(args, "fp", layers)
        if not fp.get("oom"):
            rows += [fp, run_child(args, "qslaw", layers)]
    block = run_child(args, "omniquant-block", 1)
    from qslaw_pipe.pipeline.device import resolve

    meta = {
        "device": machine_name(args.device),
        "argv": " ".join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "batch": args.batch,
        "image_tokens": (args.image_size // 14) ** 2,
        "text_tokens": args.text_tokens,
        "dtype": str(resolve(args.device, args.dtype).dtype).removeprefix("torch."),
        "steps": args.steps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(
        json.dumps({"meta": meta, "methods": rows, "omniquant_block": block}, indent=1)
    )
    (args.out / "scale.md").write_text(table(rows, block, meta))
    print(table(rows, block, meta))
    gc.collect()


if __name__ == "__main__":
    main()
