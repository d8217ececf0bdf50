"""Benchmark: peers on the calibrate table's model, data and held-out windows (issue: the calibration table
against real peers). Each peer runs in its own environment, built here when missing:

  llm-compressor GPTQ  ($QSLAW_CACHE/venv-peers: torch 2.13 from the local wheel, llmcompressor 0.14.0.1,
                        which pins transformers <= 5.17 and compressed-tensors 0.19, hence its own venv)
  AutoRound            (the same venv: llmcompressor pins auto-round 0.15.1); `--autoround-iters` per block
                        (its default 200; its "light" preset 50)
  HQQ                  (the same venv, hqq 0.2.8.post1: calibration-free, configured as its authors' defaults,
                        bench/peer_hqq.py)

Our side writes WORK/lm (the default VLM's language model as a causal LM), WORK/tokens.pt (the calibration
chunks and the held-out windows of bench/calibrate.py, tokenized by our code) and calls
bench/peer_llmcompressor.py with the peer's interpreter. compressed-tensors needs every width to be a
multiple of the group, and SmolLM2's 576 is not one of 128: the peer runs with groups of 64 (more scales
than our g128: the table says so). Rows join docs/results/calibrate.{json,md} (bench/calibrate.py's table).

    python bench/peers.py [--bits 4,3] [--nsamples 32] [--windows 32]
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PEER_PACKAGES = ["torch==2.13.0", "llmcompressor==0.14.0.1", "hqq==0.2.8.post1"]


def peer_python() -> Path:
    from qslaw_pipe.paths import cache_root

    venv = cache_root() / "venv-peers"
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True
    )  # no-op when present
    return python


def write_inputs(work: Path, nsamples: int, windows: int) -> None:
    """The causal LM inside the default VLM, and the token chunks both sides use."""
    from transformers import AutoModelForCausalLM

    from qslaw_pipe.paths import default_model_dir, default_text_path
    from qslaw_pipe.pipeline.data.text import read_text, split_text, token_chunks
    from qslaw_pipe.pipeline.model import load_model

    lm = load_model(default_model_dir())
    text = read_text(default_text_path())
    tokens = {
        "calib": token_chunks(lm.tokenizer, split_text(text, "calib"), 512, nsamples),
        "windows": token_chunks(lm.tokenizer, split_text(text, "eval"), 512, windows),
    }
    work.mkdir(parents=True, exist_ok=True)
    torch.save(tokens, work / "tokens.pt")
    causal = AutoModelForCausalLM.from_config(lm.model.config.get_text_config(), dtype=torch.float32)
    decoder = lm.model.get_decoder()
    causal.model.load_state_dict(decoder.state_dict())
    causal.lm_head.load_state_dict(lm.model.get_output_embeddings().state_dict())
    causal.save_pretrained(work / "lm")
    lm.tokenizer.save_pretrained(work / "lm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", default="4,3")
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-peers")
    ap.add_argument("--peers", default="gptq,autoround")
    ap.add_argument("--autoround-iters", type=int, default=200)
    ap.add_argument(
        "--save-weights",
        action="store_true",
        help="Keep each peer's quantized decoder weights (WORK/w<bits>-<peer>.pt) for bench/calibrate_mcq.py --direct.",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from calibrate import merge_earlier, write

    from qslaw_pipe.pipeline.sysinfo import machine_name

    python = peer_python()
    write_inputs(args.work, args.nsamples, args.windows)
    scripts = {
        "gptq": ("peer_llmcompressor.py", [], f"llm-compressor GPTQ g{args.group}"),
        "hqq": ("peer_hqq.py", [], f"HQQ g{args.group} (its authors' defaults)"),
        "hqq-rtn": ("peer_hqq.py", ["--no-optimize"], f"HQQ g{args.group}, solver off"),
        "autoround": (
            "peer_autoround.py",
            ["--iters", str(args.autoround_iters)],
            f"AutoRound {args.autoround_iters} iters g{args.group}",
        ),
    }
    rows = []
    for peer in args.peers.split(","):
        script, extra, name = scripts[peer]
        for bits in (int(b) for b in args.bits.split(",")):
            cmd = [str(python), str(ROOT / "bench" / script), "--work", str(args.work), *extra]
            cmd += ["--bits", str(bits), "--group", str(args.group)]
            if args.save_weights:
                cmd += ["--save", str(args.work / f"w{bits}-{peer}.pt")]
            result = json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
            )
            rows.append(
                {
                    "bits": bits,
                    "method": name,
                    "ppl": result["ppl"],
                    "calib_s": result["calib_s"],
                    "measured": time.strftime("%Y-%m-%d"),
                    "device": machine_name("cpu"),
                }
            )
            print(rows[-1], flush=True)
    calibrate_args = argparse.Namespace(windows=args.windows, nsamples=args.nsamples, epochs=3, lr=0.5)
    write(merge_earlier(rows), calibrate_args)


if __name__ == "__main__":
    main()
