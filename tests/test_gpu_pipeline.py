"""The pipeline on a CUDA device (marked gpu; skipped without CUDA): the lean bf16 QSLAW kernel, compiled,
against the fp32 reference; calibrate -> tune -> fold -> export on CUDA against the same run on the CPU;
resume on CUDA against an uninterrupted run."""

import shutil

import pytest
import torch

from qslaw_pipe.pipeline.folded import read_folded
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import export as ex
from qslaw_pipe.stages import fold as fd
from qslaw_pipe.stages import tune as tn
from qslaw_pipe.stages.tune import loop
from tests.test_device import _lean_vs_reference, calibrate_and_tune
from tests.tiny import tiny_scienceqa

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("compiled", [False, True])
def test_lean_bf16_qslaw_on_cuda_matches_fp32_reference(compiled):
    _lean_vs_reference("cuda", compiled)


def _pipeline(run, llava_dir, corpus, sqa, device, dtype):
    calibrate_and_tune(
        run, llava_dir, corpus, sqa, device, dtype, method="omniquant", nsamples=4, seqlen=32, epochs=1
    )
    folded = read_folded(fd.run(fd.FoldConfig(device=device), run).artifact.path)
    ex.run(ex.export_config(), run)
    return folded


@pytest.mark.parametrize("dtype,rtol", [("fp32", 1e-3), ("bf16", 3e-2)])
def test_cuda_run_folds_like_the_cpu_run(tmp_path, llava_dir, corpus, dtype, rtol):
    sqa = tiny_scienceqa(tmp_path / "sqa")
    gpu = _pipeline(tmp_path / "gpu", llava_dir, corpus, sqa, "cuda", dtype)
    cpu = _pipeline(tmp_path / "cpu", llava_dir, corpus, sqa, "cpu", "fp32")
    for name, q in cpu.layers.items():
        a, b = q.dequantized(), gpu.layers[name].dequantized()
        assert (a - b).norm() <= rtol * a.norm(), name


def test_resume_on_cuda_reproduces_an_uninterrupted_run(tmp_path, llava_dir, corpus, monkeypatch):
    sqa = tiny_scienceqa(tmp_path / "sqa")
    base = tmp_path / "base"
    cal.run(cal.CalibrateConfig(method="rtn", bits=4, group_size=32), base, llava_dir, corpus, bar=False)
    cfg = tn.TuneConfig(
        data=str(sqa),
        steps=6,
        batch_size=2,
        warmup_steps=2,
        text_seqlen=16,
        checkpoint_every=2,
        device="cuda",
    )
    runs = {}
    for name in ("whole", "cut"):
        runs[name] = tmp_path / name
        shutil.copytree(base / "calibrate", runs[name] / "calibrate")
    whole = tn.run(cfg, runs["whole"], llava_dir, corpus, bar=False).artifact.path
    real = loop.save_checkpoint

    def dies_after_saving(path, model, opt, sched, step, rows):
        real(path, model, opt, sched, step, rows)
        if step >= 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", dies_after_saving)
    with pytest.raises(KeyboardInterrupt):
        tn.run(cfg, runs["cut"], llava_dir, corpus, bar=False)
    monkeypatch.undo()
    resumed = tn.run(cfg, runs["cut"], llava_dir, corpus, bar=False)
    assert resumed.resumed
    ta, _ = load_tensors(whole / "trainable.safetensors")
    tb, _ = load_tensors(resumed.artifact.path / "trainable.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
