"""--device / --dtype: resolution and its one-line errors; the lean QSLAW path (weight kept in bf16, matmuls
in bf16) against the fp32 reference; a run tuned in bf16 folds exactly on the CPU. The same checks on a
CUDA device are in test_gpu_pipeline.py (marked gpu)."""

import pytest
import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.qslaw import QslawLinearFunction, qslaw_reference
from qslaw_pipe.kernels.quant import rtn_qparams, to_groups
from qslaw_pipe.pipeline.artifact import read_artifact
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.pipeline.folded import read_folded
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import fold as fd
from qslaw_pipe.stages import tune as tn
from qslaw_pipe.stages.evaluate.tuned_model import load_tuned
from tests.tiny import tiny_scienceqa

# bf16 keeps 8 significant bits: one rounding is <= 2^-9 relative; a K-term dot product of bf16 operands
# accumulated in fp32 stays within a few of those, relative to the output's scale
BF16_RTOL = 2e-2


def test_device_and_dtype_resolution():
    assert resolve("cpu").dtype == torch.float32 and resolve("cpu", "bf16").dtype == torch.bfloat16
    for bad in ("gpu", "cuda:x", "cpu:1"):
        with pytest.raises(QslawError, match=f"invalid --device {bad}"):
            resolve(bad)
    with pytest.raises(QslawError, match="invalid --dtype int8"):
        resolve("cpu", "int8")
    if not torch.cuda.is_available():
        with pytest.raises(QslawError, match="no CUDA device.*--device cpu"):
            resolve("cuda")
        assert resolve("auto").device.type == "cpu"


def _lean_vs_reference(device: str, compiled: bool) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 160, generator=g)
    delta, zp = rtn_qparams(w, 4, 32)
    w16 = w.bfloat16()  # the weight as the lean path stores it; the reference sees the same values in fp32
    s = (1 + 0.05 * torch.randn(delta.shape, generator=g)).to(device).requires_grad_(True)
    x = torch.randn(4, 7, 160, generator=g).to(device)
    delta, zp = delta.to(device), zp.float().to(device)
    ref_w = qslaw_reference(w16.float().to(device), s, delta, zp, 4, 32)
    y_ref = x @ ref_w.t()
    gy = torch.randn(y_ref.shape, generator=g).to(device)
    gs_ref = torch.autograd.grad(y_ref, s, gy)[0]
    w_groups = to_groups(w16.to(device), 32)
    assert w_groups.element_size() == 2  # 2 bytes per weight
    y = QslawLinearFunction.apply(x.bfloat16(), s, w_groups, delta, zp, None, 4, 160, compiled)
    gs = torch.autograd.grad(y, s, gy.bfloat16())[0]
    assert y.dtype == torch.bfloat16 and gs.dtype == torch.float32
    assert (y.float() - y_ref).abs().max() <= BF16_RTOL * y_ref.abs().max()
    assert (gs - gs_ref).abs().max() <= BF16_RTOL * gs_ref.abs().max()


def test_lean_bf16_qslaw_matches_fp32_reference_within_bf16_tolerance():
    _lean_vs_reference("cpu", compiled=False)


def calibrate_and_tune(run, llava_dir, corpus, sqa, device: str, dtype: str, **calib) -> None:
    """A tiny calibrate (RTN unless `calib` says otherwise) and a 3-step QSLAW tune on `device` in `dtype`."""
    calib = {"method": "rtn", **calib}
    cal.run(
        cal.CalibrateConfig(bits=4, group_size=32, device=device, **calib), run, llava_dir, corpus, bar=False
    )
    cfg = tn.TuneConfig(
        data=str(sqa),
        steps=3,
        batch_size=2,
        warmup_steps=1,
        text_seqlen=16,
        lm_lr=2e-2,
        device=device,
        dtype=dtype,
    )
    tn.run(cfg, run, llava_dir, corpus, bar=False)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, llava_dir, corpus):
    run = tmp_path_factory.mktemp("bf16") / "r"
    calibrate_and_tune(run, llava_dir, corpus, tiny_scienceqa(tmp_path_factory.mktemp("sqa")), "cpu", "bf16")
    return run


def test_bf16_tuned_run_records_its_dtypes_and_folds_exactly_on_the_cpu(bf16_run):
    m = read_artifact(bf16_run, "tune").metrics
    assert (m["device"], m["dtype"], m["weight_dtype"]) == ("cpu", "bfloat16", "bfloat16")
    folded = read_folded(fd.run(fd.FoldConfig(device="cpu"), bf16_run).artifact.path)
    lm, _ = load_tuned(bf16_run)  # rebuilt from the weights in bf16, as tuned
    named = dict(lm.model.named_modules())
    assert all(torch.equal(q.dequantized(), named[n].weight) for n, q in folded.layers.items())


def test_device_is_not_part_of_an_artifacts_identity(bf16_run, llava_dir, corpus):
    cfg = cal.CalibrateConfig(method="rtn", bits=4, group_size=32, device="auto")
    assert cal.run(cfg, bf16_run, llava_dir, corpus, bar=False).reused
