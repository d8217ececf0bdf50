"""AutoRound's own quantized checkpoints and AutoRound's own dequantization of them, inside the peers'
environment (bench/import_check.py builds it and calls this script).

Same inputs as bench/peer_autoround.py (WORK/lm, WORK/tokens.pt): AutoRound at W<bits> g<group>, asymmetric,
`--iters` per block (0: its round-to-nearest), saved in each of `--formats` (auto_round, auto_gptq, auto_awq)
under OUT/<format>/. Beside each checkpoint, peer_dequantized.safetensors holds every quantized Linear's weight
as AutoRound's own modules compute it: its QuantLinear's forward on the identity (gptq-style packings), its
dequantize_gemm (awq). One JSON line per format.

    PEER_PYTHON bench/peer_autoround_export.py --work runs/bench-peers --out runs/imports --bits 4 --group 64
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from peer_autoround import autoround  # noqa: E402


def peer_weight(tensors: dict, name: str, qc: dict) -> torch.Tensor:
    """[out, in] fp32 as AutoRound's own code dequantizes the layer."""
    bits, group = int(qc["bits"]), int(qc["group_size"])
    packing = str(qc.get("packing_format", "")) if qc["quant_method"] == "auto-round" else qc["quant_method"]
    local = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{name}.")}
    if "awq" in packing:
        from auto_round.export.export_to_awq.utils import dequantize_gemm

        return dequantize_gemm(local["qweight"], local["qzeros"], local["scales"], bits, group).t().float()
    if "auto_gptq" in packing or packing == "gptq":
        from auto_round_extension.torch.qlinear_torch_zp import QuantLinear
    else:
        from auto_round_extension.torch.qlinear_torch import QuantLinear
    in_features, out = local["qweight"].shape[0] * 32 // bits, local["scales"].shape[1]
    g_idx = local.pop(
        "g_idx", None
    )  # its forward's g_idx path slices the outputs; the trivial order is the same
    assert g_idx is None or torch.equal(g_idx.long(), torch.arange(in_features) // group), "act order"
    layer = QuantLinear(bits, group, in_features, out, bias=False)
    layer.load_state_dict({k: v for k, v in local.items() if k != "bias"}, strict=False)
    with torch.no_grad():
        return layer(torch.eye(in_features, dtype=torch.float16)).t().float()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group", type=int, required=True)
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--formats", default="auto_round,auto_gptq,auto_awq")
    args = ap.parse_args()
    from safetensors.torch import load_file, save_file

    for fmt in args.formats.split(","):
        start = time.perf_counter()
        rounder = autoround(args.work, args.bits, args.group, args.iters)
        out = args.out / f"w{args.bits}g{args.group}-{args.iters}iters" / fmt
        try:
            rounder.quantize_and_save(str(out), format=fmt)
        except Exception as e:  # a format AutoRound refuses at these settings: say so, go on
            print(json.dumps({"format": fmt, "error": f"{type(e).__name__}: {str(e)[:200]}"}), flush=True)
            continue
        elapsed = time.perf_counter() - start
        saved = next(p.parent for p in out.rglob("config.json"))
        qc = json.loads((saved / "config.json").read_text())["quantization_config"]
        tensors = {}
        for f in saved.glob("*.safetensors"):
            tensors.update(load_file(str(f)))
        names = sorted(k.removesuffix(".qweight") for k in tensors if k.endswith(".qweight"))
        save_file(
            {n: peer_weight(tensors, n, qc).contiguous() for n in names},
            str(saved / "peer_dequantized.safetensors"),
        )
        print(
            json.dumps(
                {"format": fmt, "dir": str(saved), "layers": len(names), "quantize_s": round(elapsed, 1)}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
