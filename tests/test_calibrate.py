"""Stage calibrate on a tiny LLaVA: clipping trains, RTN equals a min-max reference, resume equality, eval ppl."""

import json

import pytest
import torch
from click.testing import CliRunner

from qslaw_pipe.cli import main
from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.quant import rtn_qparams
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages.calibrate import omniquant
from tests.helpers.interrupt import interrupted_calibration

SMALL = dict(nsamples=4, seqlen=16, epochs=4, batch_size=2, lr=2e-2)


def _qparams(run):
    return load_tensors(run / "calibrate" / "qparams.safetensors")


def test_omniquant_clipping_trains(tmp_path, llava_dir, corpus):
    res = cal.run(
        cal.CalibrateConfig(bits=3, group_size=32, **SMALL), tmp_path / "r", llava_dir, corpus, bar=False
    )
    blocks = res.artifact.metrics["blocks"]
    assert len(blocks) == 2
    assert all(b["loss_after"] < b["loss_before"] for b in blocks), blocks
    tensors, header = _qparams(tmp_path / "r")
    assert header["bits"] == 3 and len(header["group_sizes"]) == 14
    model = load_model(llava_dir).model
    named = dict(model.named_modules())
    for name in header["group_sizes"]:
        out, k = named[name].weight.shape
        assert tensors[f"{name}.delta"].shape == (out, (k + 31) // 32)
    assert tensors[f"{name}.zero_point"].dtype == torch.uint8
    assert not torch.all(tensors[f"{name}.lwc_upper"] == 4.0)  # the clipping logits moved
    assert not (tmp_path / "r" / "calibrate" / "resume").exists()


def test_rtn_artifact_equals_minmax_reference(tmp_path, llava_dir, corpus):
    cal.run(
        cal.CalibrateConfig(method="rtn", bits=4, group_size=-1), tmp_path / "r", llava_dir, corpus, bar=False
    )
    tensors, header = _qparams(tmp_path / "r")
    model = load_model(llava_dir).model
    named = dict(model.named_modules())
    for name, gs in header["group_sizes"].items():
        w = named[name].weight.detach()
        assert gs == w.shape[1]
        mn, mx = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
        delta = ((mx - mn) / 15).clamp(min=1e-8)
        zp = torch.round(-mn / delta).clamp(0, 15)
        assert torch.equal(tensors[f"{name}.delta"], delta)
        assert torch.equal(tensors[f"{name}.zero_point"], zp.to(torch.uint8))
        d2, z2 = rtn_qparams(w, 4, gs)
        assert torch.equal(d2, delta) and torch.equal(z2, zp.to(torch.uint8))


@pytest.mark.parametrize("method", ["omniquant", "qvlm", "signround"])
def test_interrupted_calibration_resumes_to_identical_tensors(
    tmp_path, llava_dir, corpus, monkeypatch, method
):
    """Also inside qvlm (blocks of one layer here, so block 1 exists): its partition is kept for the resume."""
    cfg = cal.CalibrateConfig(bits=4, group_size=32, method=method, max_block=1, **SMALL)
    cal.run(cfg, tmp_path / "whole", llava_dir, corpus, bar=False)
    real = omniquant.calibrate_block
    interrupted_calibration(cfg, tmp_path / "split", llava_dir, corpus, monkeypatch)
    assert not (tmp_path / "split" / "calibrate").exists()
    resume = tmp_path / "split" / ".calibrate.partial" / "resume"
    assert (resume / "block_000.safetensors").exists()
    if method == "qvlm":
        assert json.loads((resume / "partition.json").read_text())["spans"] == [[0, 1], [1, 2]]
    calls = []
    monkeypatch.setattr(omniquant, "calibrate_block", lambda *a, **k: calls.append(a[6]) or real(*a, **k))
    res = cal.run(cfg, tmp_path / "split", llava_dir, corpus, bar=False)
    assert res.resumed and calls == [1]
    a, _ = _qparams(tmp_path / "whole")
    b, _ = _qparams(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hybrid_calibration_runs_with_images(tmp_path, llava_dir, corpus, monkeypatch):
    from qslaw_pipe.pipeline.data.sample import Sample
    from qslaw_pipe.stages.calibrate import batches
    from tests.tiny import write_png

    img = write_png(tmp_path / "a.png")
    monkeypatch.setattr(batches, "load_easyvqa", lambda split, seed=0: [Sample(img, "Shape?", "A")] * 4)
    cfg = cal.CalibrateConfig(
        calib="hybrid", bits=4, group_size=32, nsamples=2, seqlen=48, epochs=1, batch_size=2
    )
    res = cal.run(cfg, tmp_path / "r", llava_dir, corpus, bar=False)
    assert len(res.artifact.metrics["blocks"]) == 2


def test_config_validation_is_one_line():
    with pytest.raises(QslawError, match="invalid --bits 5"):
        cal.CalibrateConfig(bits=5)
    with pytest.raises(QslawError, match="bad targeting rule"):
        cal.CalibrateConfig(rules=("nonsense",))


def test_cli_calibrate_reuse_refuse_and_eval_ppl(tmp_path, llava_dir, corpus):
    runner = CliRunner()
    base = [
        "calibrate",
        "--run-dir",
        str(tmp_path / "r"),
        "--model",
        str(llava_dir),
        "--text",
        str(corpus),
        "--nsamples",
        "2",
        "--seqlen",
        "16",
        "--epochs",
        "1",
        "--json",
    ]
    first = runner.invoke(main, base)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["reused"] is False
    again = runner.invoke(main, base)
    assert json.loads(again.stdout)["reused"] is True
    refused = runner.invoke(main, [*base, "--bits", "3"])
    assert (
        refused.exit_code == 2 and "different config (bits)" in refused.output and "--force" in refused.output
    )
    missing = runner.invoke(
        main,
        [
            "eval",
            "ppl",
            "--run-dir",
            str(tmp_path / "none"),
            "--model",
            str(llava_dir),
            "--text",
            str(corpus),
        ],
    )
    assert missing.exit_code == 2 and "calibrate/manifest.json not found" in missing.output
    ppl = runner.invoke(
        main,
        [
            "eval",
            "ppl",
            "--run-dir",
            str(tmp_path / "r"),
            "--model",
            str(llava_dir),
            "--text",
            str(corpus),
            "--seqlen",
            "16",
            "--windows",
            "3",
            "--json",
        ],
    )
    assert ppl.exit_code == 0, ppl.output
    m = json.loads(ppl.stdout)
    assert m["windows"] == 3 and m["fp"] > 1 and m["quantized"] > 1 and m["fp"] != m["quantized"]
    assert (tmp_path / "r" / "eval-ppl" / "manifest.json").exists()
