"""Benchmark: torchao's CPU int4 kernel (aten._weight_int4pack_mm_for_cpu, what Int4OpaqueTensor runs) with fp32
and with bf16 activations, against a dense matmul of the same shape, on each ATen CPU kernel path this CPU can
run (the default path, and `ATEN_CPU_CAPABILITY=avx2` standing for an AVX2-only CPU). One decoded token (M=1)
and a 98-token prefill (M=98), the default LM's MLP shape [1536 x 576], groups of 64, 1 thread. This is what
load_torchao's choice of bf16 activations rests on. Writes docs/results/torchao_kernel.{json,md}.

    python bench/torchao_cpu_kernel.py
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"
N, K, GROUP = 1536, 576, 64


def measure() -> list[dict]:
    """Microseconds per call on this process's kernel path (median of 5 runs of 20 calls)."""
    import torch
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (N, K), dtype=torch.int32, generator=gen)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    scale = torch.rand(N, K // GROUP, generator=gen) * 0.01 + 0.001
    zero = torch.zeros(N, K // GROUP)
    dense = torch.randn(N, K, generator=gen)

    def timed(fn) -> float:
        fn()
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(20):
                fn()
            runs.append((time.perf_counter() - start) / 20 * 1e6)
        return sorted(runs)[2]

    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        sz = pack_tinygemm_scales_and_zeros(scale.to(dtype), zero.to(dtype), dtype)
        w = dense.to(dtype)
        for m in (1, 98):
            x = torch.randn(m, K, generator=gen).to(dtype)
            rows.append(
                {
                    "activations": name,
                    "M": m,
                    "int4_us": timed(
                        lambda x=x, sz=sz: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, sz)
                    ),
                    "dense_us": timed(lambda x=x, w=w: x @ w.t()),
                }
            )
    return rows


def main() -> None:
    if "--child" in sys.argv:
        print(json.dumps(measure()))
        return
    from qslaw_pipe.kernels.isa import cpu_description

    paths = {}
    for path in ("default", "avx2"):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if path != "default":
            env["ATEN_CPU_CAPABILITY"] = path
        done = subprocess.run(
            [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
        )
        paths[path] = json.loads(done.stdout.strip().splitlines()[-1])
    setup = {
        "cpu": cpu_description(),
        "shape": [N, K],
        "group": GROUP,
        "threads": 1,
        "measured": time.strftime("%Y-%m-%d"),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "torchao_kernel.json").write_text(json.dumps({"setup": setup, "paths": paths}, indent=2))
    lines = [
        "# torchao's CPU int4 kernel: fp32 vs bf16 activations",
        "",
        "Produced by `python bench/torchao_cpu_kernel.py`. "
        + "; ".join(f"{k}: {v}" for k, v in setup.items())
        + ".",
        "Microseconds per call, median of 5 runs of 20; `avx2`: the same CPU forced onto ATen's AVX2 kernels.",
        "",
        "| ATen kernel path | activations | M (tokens) | int4 kernel us | dense matmul us | int4 / dense |",
        "|---|---|---|---|---|---|",
    ]
    for path, rows in paths.items():
        for r in rows:
            lines.append(
                f"| {path} | {r['activations']} | {r['M']} | {r['int4_us']:.0f} | {r['dense_us']:.0f} "
                f"| {r['int4_us'] / r['dense_us']:.2f} |"
            )
    (OUT / "torchao_kernel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
