"""CUDA kernels of the ai.qslaw library (marked gpu: runs only where onnxruntime has a CUDA EP and nvcc exists)."""

import shutil
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from qslaw_pipe.exports.onnx.builder import make_model
from qslaw_pipe.exports.onnx.int4_ops import matmulnbits_inputs
from qslaw_pipe.kernels import build as kb
from qslaw_pipe.kernels.int4_reference import matmul_int4_reference
from qslaw_pipe.kernels.pack import unpack_int4
from tests.test_kernels_ort import _operands, _session

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers() or shutil.which("nvcc") is None,
        reason="needs onnxruntime-gpu with a CUDA device and nvcc",
    ),
]


@pytest.fixture(scope="module")
def cuda_library(tmp_path_factory):
    return kb.build(tmp_path_factory.mktemp("ortlib-cuda"), cuda=True)


@pytest.mark.parametrize(
    "m, k, n, gs", [(1, 576, 1536, 128), (1, 1536, 576, 128), (64, 576, 576, 64), (3, 577, 40, 32)]
)
def test_cuda_matmul_equals_reference_and_times(cuda_library, m, k, n, gs):
    packed, delta, zp = _operands(n, k, gs, seed=k)
    a = torch.randn(m, k, generator=torch.Generator().manual_seed(2))
    sess = _session(cuda_library, "MatMulInt4", k, n, gs, providers=["CUDAExecutionProvider"])
    feeds = {"A": a.numpy(), "B": packed.numpy(), "d": delta.numpy(), "z": zp.numpy()}
    y = sess.run(None, feeds)[0]
    ref = matmul_int4_reference(a, packed, delta, zp, k, gs).numpy()
    assert np.abs(y - ref).max() <= 1e-4 * np.abs(ref).max()


def _weights_session(op: str, domain: str, weights: dict, k: int, n: int, library=None, **attrs):
    """One-node graph whose weights are initializers (resident on the GPU), A [m, K] the only input."""
    node = helper.make_node(op, ["A", *weights], ["Y"], domain=domain, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["m", n])],
        [numpy_helper.from_array(np.ascontiguousarray(v), name) for name, v in weights.items()],
    )
    model = make_model(graph, {"": 21, domain: 1})
    opts = ort.SessionOptions()
    if library is not None:
        opts.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CUDAExecutionProvider"])


def _device_time_us(sess, a: np.ndarray, reps: int = 200) -> tuple[float, np.ndarray]:
    """Microseconds per run with A and Y bound on the GPU (no host copies in the loop)."""
    binding = sess.io_binding()
    binding.bind_ortvalue_input("A", ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0))
    binding.bind_output("Y", "cuda")
    for _ in range(10):
        sess.run_with_iobinding(binding)
    start = time.perf_counter()
    for _ in range(reps):
        sess.run_with_iobinding(binding)
    elapsed = (time.perf_counter() - start) / reps * 1e6
    return elapsed, binding.copy_outputs_to_cpu()[0]


@pytest.mark.parametrize("m, k, n", [(1, 576, 576), (1, 576, 1536), (1, 1536, 576), (64, 576, 1536)])
def test_cuda_timing_vs_matmulnbits(cuda_library, m, k, n):
    """Ours vs onnxruntime's MatMulNBits on the CUDA EP, same codes; prints both (goal at M = 1: ours <= MatMulNBits)."""
    gs = 128
    packed, delta, zp = _operands(n, k, gs, seed=n)
    codes = unpack_int4(packed, k)
    b, s, z = matmulnbits_inputs(codes, delta, zp, gs)
    ours = _weights_session(
        "MatMulInt4",
        "ai.qslaw",
        {"B": packed.numpy(), "d": delta.numpy(), "z": zp.numpy()},
        k,
        n,
        cuda_library,
        K=k,
        N=n,
        group_size=gs,
    )
    theirs = _weights_session(
        "MatMulNBits",
        "com.microsoft",
        {"B": b.numpy(), "s": s.numpy(), "z": z.numpy()},
        k,
        n,
        K=k,
        N=n,
        bits=4,
        block_size=gs,
    )
    a = torch.randn(m, k, generator=torch.Generator().manual_seed(3)).numpy()
    (t_ours, y_ours), (t_theirs, y_theirs) = _device_time_us(ours, a), _device_time_us(theirs, a)
    assert np.abs(y_ours - y_theirs).max() <= 1e-3 * np.abs(y_theirs).max()
    print(
        f"CUDA m={m} k={k} n={n}: ours {t_ours:.1f} us, MatMulNBits {t_theirs:.1f} us, ratio {t_ours / t_theirs:.2f}"
    )


@pytest.mark.parametrize(
    "op, precision, tol", [("matmulnbits", "fp16", 2e-2), ("qdq", "fp16", 2e-2), ("custom", "fp32", 1e-3)]
)
def test_exported_vlm_on_the_cuda_ep_matches_the_folded_model(
    cuda_library, folded_run, monkeypatch, op, precision, tol
):
    """The exported tiny VLM on onnxruntime's CUDA EP, every int4 op (the fp16 decoder for the two that read
    fp16 activations), against the folded PyTorch model: prompt logits and greedy tokens."""
    from qslaw_pipe.exports.onnx.runtime import OrtVlm
    from qslaw_pipe.pipeline.folded import load_folded_model
    from qslaw_pipe.stages import export as ex

    monkeypatch.setenv("QSLAW_ORT_OPS", str(cuda_library))
    run, image = folded_run
    out = ex.run(ex.export_config(int4_op=op, precision=precision), run).artifact.path
    vlm = OrtVlm(out, device="cuda")
    ids, images = vlm.encode("What color is the square?", image)
    pixels = images["pixel_values"]
    logits, _ = vlm.step(vlm.inputs_embeds(ids, images), np.ones_like(ids), vlm.empty_past(1))
    lm = load_folded_model(run / "fold")
    with torch.no_grad():
        ref = lm.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels)).logits.numpy()
    assert np.abs(logits - ref).max() <= tol * np.abs(ref).max()
    assert vlm.generate_ids(ids, images, 6) == OrtVlm(out, device="cpu").generate_ids(ids, images, 6)
