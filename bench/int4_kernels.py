"""Benchmark: our ai.qslaw MatMulInt4 (CPU) vs onnxruntime's MatMulNBits (accuracy level 0: fp32 activations,
like ours) vs fp32 MatMul, in onnxruntime, on the default LM's Linear shapes (SmolLM2-135M: q/o 576x576,
k/v 192x576, gate/up 1536x576, down 576x1536) at M = 1 (decode) and M = 64 (prefill), group 128.
Ours runs once per kernel path this CPU supports (avx512, avx2; $QSLAW_CPU_ISA per session), at one thread
and at all cores. The ops are timed in rounds (each round: for every op, a fresh session, 10 untimed calls, a
block of timed calls, the session closed; median of per-call times over all rounds), so slow machine noise
hits them alike and only one thread pool exists at a time (onnxruntime's spinning workers, kept as in
deployment, would otherwise take the cores of the session being timed).
Writes docs/results/kernels.{json,md}, naming the CPU and its ISA flags.

    python bench/int4_kernels.py [--reps 200]
"""

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from qslaw_pipe.exports.onnx.builder import make_model
from qslaw_pipe.exports.onnx.int4_ops import matmulnbits_inputs
from qslaw_pipe.kernels.build import build, library_path
from qslaw_pipe.kernels.int4_reference import matmul_int4_reference
from qslaw_pipe.kernels.isa import ENV, cpu_description, supported_isas
from qslaw_pipe.kernels.pack import pack_int4
from qslaw_pipe.kernels.quant import dequantize_codes, n_groups

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
SHAPES = {
    "q/o_proj": (576, 576),
    "k/v_proj": (192, 576),
    "gate/up_proj": (1536, 576),
    "down_proj": (576, 1536),
}
GROUP = 128
PEERS = ("MatMulNBits", "fp32 MatMul")


def _model(node, inits, k):
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [node], "g", [a], [y], [numpy_helper.from_array(v, n) for n, v in inits.items()]
    )
    return make_model(graph, {"": 21, "com.microsoft": 1, "ai.qslaw": 1})


def _session(model, lib: Path, threads: int, isa: str | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.register_custom_ops_library(str(lib))
    old = os.environ.get(ENV)
    if isa:  # the kernel reads it when the session builds it
        os.environ[ENV] = isa
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old


def sessions(n: int, k: int, lib: Path, threads: int, paths: list[str]) -> tuple[dict, tuple]:
    """Session makers per op (name -> () -> InferenceSession) and the reference operands."""
    gen = torch.Generator().manual_seed(n + k)
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
    delta = torch.rand(n, n_groups(k, GROUP), generator=gen) * 0.02 + 1e-3
    zp = torch.randint(0, 16, delta.shape, dtype=torch.uint8, generator=gen)
    b, s, z = matmulnbits_inputs(codes, delta, zp, GROUP)
    ours = _model(
        helper.make_node(
            "MatMulInt4", ["A", "B", "d", "z"], ["Y"], domain="ai.qslaw", K=k, N=n, group_size=GROUP
        ),
        {"B": pack_int4(codes).numpy(), "d": delta.numpy(), "z": zp.numpy()},
        k,
    )
    nbits = _model(
        helper.make_node(
            "MatMulNBits",
            ["A", "B", "s", "z"],
            ["Y"],
            domain="com.microsoft",
            K=k,
            N=n,
            bits=4,
            block_size=GROUP,
            accuracy_level=0,
        ),
        {"B": b.numpy(), "s": s.numpy(), "z": z.numpy()},
        k,
    )
    dense = _model(
        helper.make_node("MatMul", ["A", "W"], ["Y"]),
        {"W": dequantize_codes(codes, delta, zp, GROUP).t().contiguous().numpy()},
        k,
    )
    makers = {f"ours {p}": partial(_session, ours, lib, threads, p) for p in paths}
    makers["MatMulNBits"] = partial(_session, nbits, lib, threads)
    makers["fp32 MatMul"] = partial(_session, dense, lib, threads)
    return makers, (pack_int4(codes), delta, zp)


def time_rounds(makers: dict, a: np.ndarray, reps: int, block: int = 20) -> dict[str, float]:
    times = {name: [] for name in makers}
    for _ in range(max(1, reps // block)):
        for name, make in makers.items():
            s = make()
            for _ in range(10):
                s.run(None, {"A": a})
            for _ in range(block):
                t = time.perf_counter()
                s.run(None, {"A": a})
                times[name].append(time.perf_counter() - t)
            del s
    return {name: float(np.median(v)) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    lib = library_path() or build()
    paths = [p for p in supported_isas(lib) if p != "generic"]
    cores = os.cpu_count() or 1
    rows = []
    for threads in sorted({1, cores}):
        for label, (n, k) in SHAPES.items():
            makers, (packed, delta, zp) = sessions(n, k, lib, threads, paths)
            for m in (1, 64):
                a = np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)
                ref = matmul_int4_reference(torch.from_numpy(a), packed, delta, zp, k, GROUP).numpy()
                errs = {
                    name: float(np.abs(make().run(None, {"A": a})[0] - ref).max() / np.abs(ref).max())
                    for name, make in makers.items()
                }
                t = time_rounds(makers, a, args.reps if m == 1 else max(20, args.reps // 4))
                rows.append(
                    {
                        "threads": threads,
                        "layer": label,
                        "N": n,
                        "K": k,
                        "M": m,
                        "us": {x: 1e6 * v for x, v in t.items()},
                        "rel_err": errs,
                    }
                )
                print(rows[-1], flush=True)
    write(rows, args, paths, cores)


GOALS = {1: 0.8, 64: 1.1}  # ours / MatMulNBits, per row


def write(rows, args, paths: list[str], cores: int) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    setup = {
        "device": "CPU",
        **cpu_description(),
        "kernel_paths": paths,
        "cores": cores,
        "group_size": GROUP,
        "reps": args.reps,
        "onnxruntime": ort.__version__,
    }
    (OUT / "kernels.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    cols = [f"ours {p}" for p in paths]
    lines = [
        "# Kernels benchmark (CPU)",
        "",
        "Produced by `python bench/int4_kernels.py`. "
        + "; ".join(f"{k}: {v}" for k, v in setup.items())
        + ".",
        "Median microseconds per call in onnxruntime, all ops of a row timed in alternating blocks, one session "
        "at a time, in one run; `ours <path>` "
        "is our MatMulInt4 forced to that kernel path ($QSLAW_CPU_ISA; without it the library runs the first of "
        "kernel_paths). MatMulNBits runs at accuracy level 0 (fp32 activations, exact like ours). The avx2 column "
        "is the AVX2 path on this CPU, not an AVX2-only CPU.",
        "",
        "| threads | layer | N x K | M | "
        + " | ".join(cols)
        + " | MatMulNBits | fp32 MatMul | "
        + " | ".join(f"{c} / MatMulNBits" for c in cols)
        + " | ours max rel err |",
        "|---" * (6 + 2 * len(cols) + 2) + "|",
    ]
    verdicts = []
    for r in rows:
        us = r["us"]
        ratios = {c: us[c] / us["MatMulNBits"] for c in cols}
        verdicts += [(r["threads"], r["M"], c, v) for c, v in ratios.items()]
        lines.append(
            f"| {r['threads']} | {r['layer']} | {r['N']} x {r['K']} | {r['M']} | "
            + " | ".join(f"{us[c]:.1f}" for c in cols)
            + f" | {us['MatMulNBits']:.1f} | {us['fp32 MatMul']:.1f} | "
            + " | ".join(f"{ratios[c]:.2f}" for c in cols)
            + f" | {max(r['rel_err'][c] for c in cols):.1e} |"
        )
    lines.append("")
    for c in cols:
        for m, goal in GOALS.items():
            for threads in sorted({r["threads"] for r in rows}):
                vals = [v for t, mm, cc, v in verdicts if t == threads and mm == m and cc == c]
                ok = max(vals) <= goal
                lines.append(
                    f"- {c}, M = {m}, {threads} thread(s): ours / MatMulNBits {min(vals):.2f} to {max(vals):.2f} "
                    f"(goal <= {goal} on every shape): {'met' if ok else 'NOT met'}."
                )
    lines += [
        "",
        "CUDA: no GPU was lent to the session that produced this table; the CUDA kernels "
        "(kernels/csrc/int4_cuda.cu) are checked and timed against MatMulNBits' CUDA EP by "
        "`python -m pytest -m gpu tests/test_kernels_gpu.py -s` on a GPU machine.",
    ]
    (OUT / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
