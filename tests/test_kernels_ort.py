"""The ai.qslaw onnxruntime library: CPU kernels vs the reference, nvcc compile, custom export parity."""

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from qslaw_pipe.exports.onnx.builder import make_model
from qslaw_pipe.kernels import build as kb
from qslaw_pipe.kernels.int4_reference import dequantize_int4_reference, matmul_int4_reference
from qslaw_pipe.kernels.pack import pack_int4
from qslaw_pipe.kernels.quant import n_groups


def _session(library, op: str, k: int, n: int, gs: int, providers=("CPUExecutionProvider",)):
    # symbolic shapes, so the kernel's own checks see malformed inputs
    ins = [
        helper.make_tensor_value_info("B", TensorProto.UINT8, ["n", "kb"]),
        helper.make_tensor_value_info("d", TensorProto.FLOAT, ["n", "g"]),
        helper.make_tensor_value_info("z", TensorProto.UINT8, ["n", "g"]),
    ]
    if op == "MatMulInt4":
        ins.insert(0, helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k]))
        node = helper.make_node(op, [i.name for i in ins], ["Y"], domain="ai.qslaw", K=k, N=n, group_size=gs)
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["m", n])
    else:
        node = helper.make_node(op, [i.name for i in ins], ["Y"], domain="ai.qslaw", K=k, group_size=gs)
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, k])
    model = make_model(helper.make_graph([node], "g", ins, [out]), {"": 21, "ai.qslaw": 1})
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=list(providers))


def _operands(n, k, gs, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
    delta = torch.rand(n, n_groups(k, gs), generator=gen) * 0.05 + 1e-3
    zp = torch.randint(0, 16, delta.shape, dtype=torch.uint8, generator=gen)
    return pack_int4(codes), delta, zp


@pytest.mark.parametrize(
    "m, k, n, gs",
    [
        (1, 576, 192, 128),
        (1, 300, 17, 32),
        (3, 577, 40, 64),
        (64, 1536, 96, 128),
        (9, 200, 11, 200),
        (1, 64, 5, 16),
    ],
)
def test_cpu_matmul_equals_reference(library, m, k, n, gs):
    packed, delta, zp = _operands(n, k, gs, seed=m + k)
    a = torch.randn(m, k, generator=torch.Generator().manual_seed(1))
    y = _session(library, "MatMulInt4", k, n, gs).run(
        None, {"A": a.numpy(), "B": packed.numpy(), "d": delta.numpy(), "z": zp.numpy()}
    )[0]
    ref = matmul_int4_reference(a, packed, delta, zp, k, gs).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("k, n, gs", [(577, 9, 32), (256, 4, 128)])
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
    outs = {op: ex.run(ex.ExportConfig(int4_op=op), run).artifact.path for op in ("custom", "matmulnbits")}
    logits = {}
    for op, path in outs.items():
        vlm = OrtVlm(path, device="cpu")
        ids, pixels = vlm.encode("What color is the square?", image)
        logits[op] = vlm.step(vlm.inputs_embeds(ids, pixels), np.ones_like(ids), vlm.empty_past(1))[0]
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


def test_cpu_matmul_rejects_odd_groups(library):
    packed, delta, zp = _operands(4, 64, 3, seed=0)
    with pytest.raises(Exception, match="group_size must be even"):
        _session(library, "MatMulInt4", 64, 4, 3).run(
            None,
            {"A": np.zeros((1, 64), np.float32), "B": packed.numpy(), "d": delta.numpy(), "z": zp.numpy()},
        )
