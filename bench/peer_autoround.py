"""One AutoRound run inside the peers' environment (bench/peers.py builds it and calls this script).

Same inputs as bench/peer_llmcompressor.py (WORK/lm, WORK/tokens.pt): AutoRound (sign-gradient rounding and
clipping, its defaults: 200 iterations per block) at W<bits>, asymmetric, groups of <group>, calibrated on our
chunks, saved in its `fake` format (dequantized weights) and scored on the held-out windows. One JSON line.

    PEER_PYTHON bench/peer_autoround.py --work runs/bench-peers --bits 3 --group 64
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

# this folder's scripts must not shadow the peer's packages
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from peer_llmcompressor import report  # noqa: E402


def autoround(work: Path, bits: int, group: int, iters: int):
    """AutoRound on WORK/lm with our calibration chunks (WORK/tokens.pt), asymmetric, on the CPU."""
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calib = torch.load(work / "tokens.pt")["calib"]
    return AutoRound(
        AutoModelForCausalLM.from_pretrained(work / "lm", dtype=torch.float32),
        AutoTokenizer.from_pretrained(work / "lm"),
        bits=bits,
        group_size=group,
        sym=False,
        dataset=[{"input_ids": row.unsqueeze(0)} for row in calib],
        nsamples=len(calib),
        seqlen=calib.shape[1],
        iters=iters,
        device_map="cpu",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group", type=int, required=True)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument(
        "--save", type=Path, help="Also save the quantized decoder Linears' effective weights here."
    )
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    tokens = torch.load(args.work / "tokens.pt")
    start = time.perf_counter()
    rounder = autoround(args.work, args.bits, args.group, args.iters)
    with tempfile.TemporaryDirectory() as out:
        rounder.quantize_and_save(out, format="fake")
        elapsed = time.perf_counter() - start
        saved = next(
            p.parent for p in Path(out).rglob("config.json")
        )  # it adds a <name>-w<bits>g<group> folder
        report(
            AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32), tokens["windows"], args, elapsed
        )


if __name__ == "__main__":
    main()
