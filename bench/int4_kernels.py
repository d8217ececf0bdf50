"""Benchmark: our ai.qslaw MatMulInt4 (CPU) vs onnxruntime's MatMulNBits vs fp32 MatMul, in onnxruntime,
on the default LM's Linear shapes (SmolLM2-135M: q/o 576x576, k/v 192x576, gate/up 1536x576, down
576x1536) at M = 1 (decode) and M = 64 (prefill), group 128. The three ops are timed interleaved
(round robin, median of per-call times), so machine noise hits them alike. Writes docs/results/kernels.{json,md}.

    python bench/int4_kernels.py [--reps 200]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from qslaw_pipe.exports.onnx.builder import make_model
from qslaw_pipe.exports.onnx.int4_ops import matmulnbits_inputs
from qslaw_pipe.kernels.build import build, library_path
from qslaw_pipe.kernels.int4_reference import matmul_int4_reference
from qslaw_pipe.kernels.pack import pack_int4, unpack_int4
from qslaw_pipe.kernels.quant import dequantize_codes, n_groups

OUT = Path(__file__).resolve().parents[1] / "docs" / "results"
SHAPES = {
    "q/o_proj": (576, 576),
    "k/v_proj": (192, 576),
    "gate/up_proj": (1536, 576),
    "down_proj": (576, 1536),
}
GROUP = 128


def _model(node, inits, k):
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [node], "g", [a], [y], [numpy_helper.from_array(v, n) for n, v in inits.items()]
    )
    return make_model(graph, {"": 21, "com.microsoft": 1, "ai.qslaw": 1})


def sessions(n: int, k: int, lib: Path, threads: int) -> tuple[dict, np.ndarray]:
    gen = torch.Generator().manual_seed(n + k)
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
    delta = torch.rand(n, n_groups(k, GROUP), generator=gen) * 0.02 + 1e-3
    zp = torch.randint(0, 16, delta.shape, dtype=torch.uint8, generator=gen)
    b, s, z = matmulnbits_inputs(codes, delta, zp, GROUP)
    models = {
        "qslaw MatMulInt4": _model(
            helper.make_node(
                "MatMulInt4", ["A", "B", "d", "z"], ["Y"], domain="ai.qslaw", K=k, N=n, group_size=GROUP
            ),
            {"B": pack_int4(codes).numpy(), "d": delta.numpy(), "z": zp.numpy()},
            k,
        ),
        "MatMulNBits": _model(
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
        ),
        "fp32 MatMul": _model(
            helper.make_node("MatMul", ["A", "W"], ["Y"]),
            {"W": dequantize_codes(codes, delta, zp, GROUP).t().contiguous().numpy()},
            k,
        ),
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.register_custom_ops_library(str(lib))
    sess = {
        name: ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for name, m in models.items()
    }
    ref_w = (pack_int4(codes), delta, zp)
    assert torch.equal(unpack_int4(ref_w[0], k), codes)
    return sess, ref_w


def time_interleaved(sess: dict, a: np.ndarray, reps: int) -> dict[str, float]:
    times = {name: [] for name in sess}
    for s in sess.values():  # warm up
        for _ in range(3):
            s.run(None, {"A": a})
    for _ in range(reps):
        for name, s in sess.items():
            t = time.perf_counter()
            s.run(None, {"A": a})
            times[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all cores).")
    args = ap.parse_args()
    lib = library_path() or build()
    rows = []
    for label, (n, k) in SHAPES.items():
        sess, (packed, delta, zp) = sessions(n, k, lib, args.threads)
        for m in (1, 64):
            a = np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)
            ref = matmul_int4_reference(torch.from_numpy(a), packed, delta, zp, k, GROUP).numpy()
            errs = {
                name: float(np.abs(s.run(None, {"A": a})[0] - ref).max() / np.abs(ref).max())
                for name, s in sess.items()
            }
            t = time_interleaved(sess, a, args.reps if m == 1 else max(20, args.reps // 4))
            rows.append(
                {
                    "layer": label,
                    "N": n,
                    "K": k,
                    "M": m,
                    "us": {x: 1e6 * v for x, v in t.items()},
                    "rel_err": errs,
                    "ours_vs_matmulnbits": t["qslaw MatMulInt4"] / t["MatMulNBits"],
                }
            )
            print(rows[-1], flush=True)
    write(rows, args)


def write(rows, args) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    setup = {
        "device": "CPU",
        "threads": args.threads or "all",
        "group_size": GROUP,
        "reps": args.reps,
        "onnxruntime": ort.__version__,
        "cores": torch.get_num_threads(),
    }
    (OUT / "kernels.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2))
    lines = [
        "# Kernels benchmark (CPU)",
        "",
        "Produced by `python bench/int4_kernels.py`. "
        + "; ".join(f"{k}: {v}" for k, v in setup.items())
        + ".",
        "Median microseconds per call, the three ops timed round robin in one run.",
        "",
        "| layer | N x K | M | ours (ai.qslaw) | MatMulNBits | fp32 MatMul | ours / MatMulNBits | ours max rel err |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        us = r["us"]
        lines.append(
            f"| {r['layer']} | {r['N']} x {r['K']} | {r['M']} | {us['qslaw MatMulInt4']:.1f} | {us['MatMulNBits']:.1f} | "
            f"{us['fp32 MatMul']:.1f} | {r['ours_vs_matmulnbits']:.2f} | {r['rel_err']['qslaw MatMulInt4']:.1e} |"
        )
    m1 = [r["ours_vs_matmulnbits"] for r in rows if r["M"] == 1]
    geo = float(np.exp(np.mean(np.log(m1))))
    lines += [
        "",
        f"Goal (CPU, M = 1): within 1.5x of MatMulNBits. Geometric mean ours / MatMulNBits at M = 1: {geo:.2f} "
        f"-> {'met' if geo <= 1.5 else 'NOT met'}.",
        "",
        "CPU only: the CUDA kernels (kernels/csrc/int4_cuda.cu) are checked and timed against MatMulNBits' CUDA EP by "
        "`python -m pytest -m gpu tests/test_kernels_gpu.py -s` on a GPU machine.",
    ]
    (OUT / "kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
