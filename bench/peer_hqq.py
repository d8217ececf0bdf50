"""One HQQ run inside the peers' environment (bench/peers.py builds it and calls this script).

HQQ (half-quadratic quantization, mobiusml/hqq) as its authors configure it (hqq's BaseQuantizeConfig
defaults): calibration-free, W<bits> asymmetric with a float zero point, groups of <group> consecutive inputs
(axis 1), the proximal optimization of scale and zero on, the zero point rounded at 4 bits only. Every Linear of
the decoder layers (the same Linears our calibrate quantizes; embeddings and lm_head stay fp32) is replaced by
its HQQ round trip; perplexity on the held-out windows of WORK/tokens.pt. One JSON line. `--no-optimize` keeps
HQQ's min-max start (float zero point) without its solver, to tell the solver's effect apart.

    PEER_PYTHON bench/peer_hqq.py --work runs/bench-peers --bits 3 --group 64
"""

import argparse
import sys
import time
from pathlib import Path

# this folder's scripts must not shadow the peer's packages
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from peer_llmcompressor import report  # noqa: E402


def hqq_round_trip(weight: torch.Tensor, bits: int, group: int, optimize: bool = True) -> torch.Tensor:
    from hqq.core.quantize import Quantizer

    w_q, meta = Quantizer.quantize(
        weight,
        nbits=bits,
        channel_wise=True,
        group_size=group,
        optimize=optimize,
        round_zero=bits == 4,
        axis=1,
        bitpack=False,
        compute_dtype=torch.float32,
        device="cpu",
    )
    meta["compute_dtype"] = torch.float32
    return Quantizer.dequantize(w_q, meta)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group", type=int, required=True)
    ap.add_argument("--no-optimize", action="store_true", help="HQQ's min-max start alone (its solver off).")
    ap.add_argument(
        "--save", type=Path, help="Also save the quantized decoder Linears' effective weights here."
    )
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    tokens = torch.load(args.work / "tokens.pt")
    model = AutoModelForCausalLM.from_pretrained(args.work / "lm", dtype=torch.float32)
    start = time.perf_counter()
    for layer in model.model.layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(
                    hqq_round_trip(module.weight, args.bits, args.group, not args.no_optimize)
                )
    report(model, tokens["windows"], args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
