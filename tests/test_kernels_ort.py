"""The ai.qslaw onnxruntime library: every CPU path this machine runs vs the reference, nvcc compile, custom export parity."""

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from qslaw_pipe.exports.onnx.builder import make_model
from qslaw_pipe.kernels import build as kb
from qslaw_pipe.kernels.int4_reference import (
    dequantize_int4_reference,
    matmul_int4_reference,
    matmul_int8_reference,
)
from qslaw_pipe.kernels.isa import ENV, selected_isa, supported_isas
from qslaw_pipe.kernels.pack import pack_int4
from qslaw_pipe.kernels.quant import n_groups


def _session(library, op: str, k: int, n: int, gs: int, providers=("CPUExecutionProvider",), weights=None):
    """One-node model; weights (B, d, z arrays) become initializers (packed once by the kernel), else the
    weights are fed at run time with symbolic shapes, so the kernel's own checks see malformed inputs."""
    ins = [
        helper.make_tensor_value_info("B", TensorProto.UINT8, ["n", "kb"]),
        helper.make_tensor_value_info("d", TensorProto.FLOAT, ["n", "g"]),
        helper.make_tensor_value_info("z", TensorProto.UINT8, ["n", "g"]),
    ]
    names = [i.name for i in ins]
    if op.startswith("MatMul"):
        ins.insert(0, helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k]))
        node = helper.make_node(op, ["A", *names], ["Y"], domain="ai.qslaw", K=k, N=n, group_size=gs)
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["m", n])
    else:
        node = helper.make_node(op, names, ["Y"], domain="ai.qslaw", K=k, group_size=gs)
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, k])
    inits = []
    if weights is not None:
        inits = [
            numpy_helper.from_array(np.ascontiguousarray(v), name)
            for name, v in zip(names, weights, strict=True)
        ]
        ins = ins[:1]
    model = make_model(helper.make_graph([node], "g", ins, [out], inits), {"": 21, "ai.qslaw": 1})
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=list(providers))


def _operands(n, k, gs, seed, bits=4):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (n, k), dtype=torch.uint8, generator=gen)
    delta = torch.rand(n, n_groups(k, gs), generator=gen) * 0.05 + 1e-3
    zp = torch.randint(0, 2**bits, delta.shape, dtype=torch.uint8, generator=gen)
    return (pack_int4(codes) if bits == 4 else codes), delta, zp


# decode (M <= 4: every row count of the register tile), prefill (M > 4, partial row tiles), odd N (partial
# panels), groups that do not start on a code block (gs 12, 3), a short last group (577), one group per row;
# small calls run inline, the large ones (1 x 1536 x 576 on) in onnxruntime's pool, prefill with few columns
# split over rows too (9 x 200 x 11)
SHAPES = [
    (1, 1536, 576, 128),
    (3, 640, 1024, 64),
    (1, 576, 192, 128),
    (1, 300, 17, 32),
    (2, 200, 40, 12),
    (3, 577, 40, 64),
    (4, 96, 33, 3),
    (5, 577, 70, 32),
    (9, 200, 11, 200),
    (64, 1536, 96, 128),
    (1, 64, 5, 16),
]


@pytest.fixture(params=["avx512", "avx2", "generic"])
def isa(request, library, monkeypatch):
    """Each compiled CPU path in turn, where this CPU runs it (QSLAW_CPU_ISA picks it for new sessions)."""
    if request.param not in supported_isas(library):
        pytest.skip(f"this CPU cannot run the {request.param} path")
    monkeypatch.setenv(ENV, request.param)
    assert selected_isa(library) == request.param
    return request.param


@pytest.mark.parametrize("m, k, n, gs", SHAPES)
@pytest.mark.parametrize("constant", [True, False], ids=["packed-once", "fed"])
def test_cpu_matmul_equals_reference(library, isa, m, k, n, gs, constant):
    packed, delta, zp = _operands(n, k, gs, seed=m + k)
    weights = (packed.numpy(), delta.numpy(), zp.numpy())
    a = torch.randn(m, k, generator=torch.Generator().manual_seed(1))
    sess = _session(library, "MatMulInt4", k, n, gs, weights=weights if constant else None)
    feeds = {"A": a.numpy()} if constant else {"A": a.numpy(), **dict(zip("Bdz", weights, strict=True))}
    y = sess.run(None, feeds)[0]
    ref = matmul_int4_reference(a, packed, delta, zp, k, gs).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize(
    "m, k, n, gs", [(1, 576, 40, 576), (3, 300, 17, 32), (2, 10, 3, 7), (64, 577, 33, 577)]
)
def test_cpu_int8_matmul_equals_reference(library, isa, m, k, n, gs):
    codes, delta, zp = _operands(n, k, gs, seed=k, bits=8)
    a = torch.randn(m, k, generator=torch.Generator().manual_seed(2))
    sess = _session(library, "MatMulInt8", k, n, gs, weights=(codes.numpy(), delta.numpy(), zp.numpy()))
    y = sess.run(None, {"A": a.numpy()})[0]
    ref = matmul_int8_reference(a, codes, delta, zp, gs).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_unknown_or_missing_cpu_path_is_one_clear_error(library, monkeypatch):
    packed, delta, zp = _operands(4, 64, 32, seed=0)
    monkeypatch.setenv(ENV, "sse9")
    sess = _session(library, "MatMulInt4", 64, 4, 32, weights=(packed.numpy(), delta.numpy(), zp.numpy()))
    with pytest.raises(Exception, match="QSLAW_CPU_ISA=sse9 is not a kernel path; use one of: .*generic"):
        sess.run(None, {"A": np.zeros((1, 64), np.float32)})


@pytest.mark.parametrize("k, n, gs", [(577, 9, 32), (256, 4, 128), (64, 3, 3)])
def test_cpu_dequantize_equals_reference_exactly(library, k, n, gs):
    packed, delta, zp = _operands(n, k, gs, seed=k)
    w = _session(library, "DequantizeInt4", k, n, gs).run(
        None, {"B": packed.numpy(), "d": delta.numpy(), "z": zp.numpy()}
    )[0]
    assert np.array_equal(w, dequantize_int4_reference(packed, delta, zp, k, gs).numpy())


def test_cpu_matmul_rejects_wrong_shapes(library):
    packed, delta, zp = _operands(4, 64, 32, seed=0)
    sess = _session(library, "MatMulInt4", 64, 4, 32)
    with pytest.raises(Exception, match="shape does not match"):
        sess.run(
            None,
            {
                "A": np.zeros((1, 64), np.float32),
                "B": packed.numpy()[:, :10],
                "d": delta.numpy(),
                "z": zp.numpy(),
            },
        )


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    assert kb.compile_cuda(tmp_path / "int4_cuda.o").stat().st_size > 0


def test_custom_export_runs_and_matches_matmulnbits(library, monkeypatch, folded_run):
    from qslaw_pipe.exports.onnx.runtime import OrtVlm
    from qslaw_pipe.stages import export as ex

    monkeypatch.setenv("QSLAW_ORT_OPS", str(library))
    run, image = folded_run
    outs = {op: ex.run(ex.export_config(int4_op=op), run).artifact.path for op in ("custom", "matmulnbits")}
    logits = {}
    for op, path in outs.items():
        vlm = OrtVlm(path, device="cpu")
        ids, images = vlm.encode("What color is the square?", image)
        logits[op] = vlm.step(vlm.inputs_embeds(ids, images), np.ones_like(ids), vlm.empty_past(1))[0]
    ref = logits["matmulnbits"]
    assert np.abs(logits["custom"] - ref).max() <= 1e-4 * np.abs(ref).max()
    assert OrtVlm(outs["custom"], device="cpu").generate("What color is the square?", image, 6) == OrtVlm(
        outs["matmulnbits"], device="cpu"
    ).generate("What color is the square?", image, 6)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_library_with_cuda_kernels_links_and_runs_on_cpu(tmp_path):
    """Built with nvcc (CUDA kernels registered for the CUDA EP), the library still serves CPU sessions."""
    lib = kb.build(tmp_path, cuda=True)
    packed, delta, zp = _operands(40, 577, 64, seed=3)
    a = torch.randn(1, 577, generator=torch.Generator().manual_seed(1))
    y = _session(lib, "MatMulInt4", 577, 40, 64).run(
        None, {"A": a.numpy(), "B": packed.numpy(), "d": delta.numpy(), "z": zp.numpy()}
    )[0]
    ref = matmul_int4_reference(a, packed, delta, zp, 577, 64).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
