"""CUDA kernels of the ai.qslaw library (marked gpu: runs only where onnxruntime has a CUDA EP and nvcc exists)."""

import shutil
import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from qslaw_pipe.kernels import build as kb
from qslaw_pipe.kernels.int4_reference import matmul_int4_reference
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
    start = time.perf_counter()
    for _ in range(50):
        sess.run(None, feeds)
    print(f"MatMulInt4 CUDA m={m} k={k} n={n}: {(time.perf_counter() - start) / 50 * 1e6:.1f} us/call")
