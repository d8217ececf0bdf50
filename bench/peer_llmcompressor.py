"""One peer run inside llm-compressor's own environment (bench/peers.py builds it and calls this script).

Reads WORK/lm (the default VLM's language model as a causal LM), WORK/tokens.pt (calibration chunks and
held-out windows, made by our code) and runs llm-compressor's `oneshot` with GPTQ (W<bits>, asymmetric, int
zero point, groups of <group>) on the calibration chunks; then perplexity on the windows: exp of the mean NLL of
tokens 2..L of every window (the formula of qslaw_pipe/stages/evaluate/perplexity.py). Prints one JSON line.

    PEER_PYTHON bench/peer_llmcompressor.py --work runs/bench-peers --bits 3 --group 64
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

# this folder's scripts must not shadow the peer's packages (transformers looks for a `kernels` package)
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch_size: int = 4) -> float:
    nll, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        ids = windows[i : i + batch_size]
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        nll += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
        ).item()
        count += ids[:, 1:].numel()
    return math.exp(nll / count)


@torch.no_grad()
def save_effective_linears(model, path: Path | None) -> None:
    """Each decoder Linear's weight as the peer's forward applies it (one-hot inputs through the module, its
    fake quantization included, bias removed: exact), keyed by name under the decoder, for bench/calibrate_mcq.py."""
    if path is None:
        return
    weights = {}
    for name, module in model.model.layers.named_modules():
        if isinstance(module, torch.nn.Linear):
            y = module(torch.eye(module.in_features))
            if module.bias is not None:
                y = y - module.bias
            weights[f"layers.{name}.weight"] = y.t().contiguous()
    torch.save(weights, path)


def report(model, windows: torch.Tensor, args, elapsed: float) -> None:
    """A peer's result: perplexity on the held-out windows, its weights kept when asked, one JSON line."""
    ppl = perplexity(model, windows)
    save_effective_linears(model, args.save)
    print(json.dumps({"bits": args.bits, "group": args.group, "ppl": ppl, "calib_s": elapsed}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group", type=int, required=True)
    ap.add_argument(
        "--save", type=Path, help="Also save the quantized decoder Linears' effective weights here."
    )
    args = ap.parse_args()
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokens = torch.load(args.work / "tokens.pt")
    model = AutoModelForCausalLM.from_pretrained(args.work / "lm", dtype=torch.float32)
    calib = Dataset.from_dict({"input_ids": tokens["calib"].tolist()})
    scheme = {
        "targets": ["Linear"],
        "weights": {
            "num_bits": args.bits,
            "type": "int",
            "symmetric": False,
            "strategy": "group",
            "group_size": args.group,
        },
    }
    recipe = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.work / "lm")
    oneshot(
        model=model,
        processor=tokenizer,
        dataset=calib,
        recipe=recipe,
        num_calibration_samples=len(calib),
        max_seq_length=tokens["calib"].shape[1],
    )
    report(model, tokens["windows"], args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
