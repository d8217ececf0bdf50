"""Benchmark: the compressed-tensors export of a folded default VLM against the folded model itself.

For each scale dtype (fp16, bf16): `export --format compressed-tensors`, read back through compressed-tensors'
own decompressor into the transformers model, then on a few easy-VQA test images: the largest logit error
(relative to the folded model's largest logit) and greedy agreement over 32 new tokens. Writes
docs/results/compressed_tensors.{json,md}.

    python bench/vllm_checkpoint_ct.py [--run-dir runs/default] [--images 4]
"""

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
TOKENS = 32


def greedy(model, inputs, n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "default")
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    from transformers import AutoConfig, AutoModelForImageTextToText

    from qslaw_pipe.cli_common import quiet_libraries
    from qslaw_pipe.exports.compressed_tensors import decompressed_state
    from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa
    from qslaw_pipe.pipeline.data.images import open_image
    from qslaw_pipe.pipeline.folded import load_folded_model
    from qslaw_pipe.pipeline.prompt import chat_prompt
    from qslaw_pipe.pipeline.sysinfo import machine_name
    from qslaw_pipe.stages import export as ex

    quiet_libraries()
    reference = load_folded_model(args.run_dir / "fold")
    samples = load_easyvqa("test", 0)[: args.images]
    prompts = [
        reference.processor(
            images=open_image(s.image),
            text=chat_prompt(reference.tokenizer, s.prompt, with_image=True),
            return_tensors="pt",
        )
        for s in samples
    ]
    expected = [greedy(reference.model, p, TOKENS) for p in prompts]
    with torch.no_grad():
        ref_logits = [reference.model(**p).logits.float() for p in prompts]
    rows = []
    for dtype in ("fp16", "bf16"):
        res = ex.run(ex.export_config(format="compressed-tensors", dtype=dtype), args.run_dir)
        out = res.artifact.path
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
        model.load_state_dict(decompressed_state(out), strict=False)
        model.tie_weights()
        model.eval()
        with torch.no_grad():
            errors = [
                ((model(**p).logits.float() - r).abs().max() / r.abs().max()).item()
                for p, r in zip(prompts, ref_logits, strict=True)
            ]
        agree = [
            sum(a == b for a, b in zip(greedy(model, p, TOKENS), e, strict=True))
            for p, e in zip(prompts, expected, strict=True)
        ]
        rows.append(
            {
                "dtype": dtype,
                "group_size": res.artifact.metrics["group_size"],
                "scale_max_relative_rounding": res.artifact.metrics["scale_max_relative_rounding"],
                "max_relative_logit_error": max(errors),
                "greedy_tokens_equal": agree,
                "mib": res.artifact.metrics["bytes"] / 2**20,
            }
        )
    machine = machine_name("cpu")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "compressed_tensors.json").write_text(json.dumps({"device": machine, "rows": rows}, indent=2))
    lines = [
        f"# compressed-tensors export vs the folded model ({machine})",
        "",
        f"Produced by `python bench/vllm_checkpoint_ct.py --images {args.images}` on `{args.run_dir.name}`'s fold: "
        "`export --format compressed-tensors --dtype D`, read back through compressed-tensors' decompressor "
        f"into the transformers model; {args.images} easy-VQA test prompts; greedy agreement over {TOKENS} new tokens "
        "(per prompt).",
        "",
        "| scale dtype | group | max scale rounding (rel.) | max logit error (rel.) | greedy tokens equal | MiB |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dtype']} | {r['group_size']} | {r['scale_max_relative_rounding']:.1e} | "
        f"{r['max_relative_logit_error']:.1e} | {', '.join(f'{a}/{TOKENS}' for a in r['greedy_tokens_equal'])} | "
        f"{r['mib']:.1f} |"
        for r in rows
    ]
    (OUT / "compressed_tensors.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
