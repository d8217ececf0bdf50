"""Learned rounding (`calibrate --method signround`): RTN at its start, a lower block loss after, adjusted
weights that carry the learned codes exactly through tune and fold, the rate by method."""

import pytest
import torch

from qslaw_pipe.kernels.quant import quantize_codes, rtn_qparams
from qslaw_pipe.kernels.rounding import RoundingQuantizer
from qslaw_pipe.pipeline.artifact import read_artifact
from qslaw_pipe.pipeline.folded import read_folded
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import load_calibrated
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import fold as fd
from qslaw_pipe.stages import tune as tn
from qslaw_pipe.stages.evaluate.tuned_model import load_tuned
from tests.tiny import tiny_scienceqa

SMALL = dict(nsamples=4, seqlen=16, epochs=4, batch_size=2)


@pytest.fixture(scope="module")
def rounded(tmp_path_factory, llava_dir, corpus):
    run = tmp_path_factory.mktemp("signround") / "r"
    cfg = cal.CalibrateConfig(method="signround", bits=3, group_size=32, **SMALL)
    cal.run(cfg, run, llava_dir, corpus, bar=False)
    return run


def test_rate_is_the_methods_own_unless_given():
    assert cal.CalibrateConfig(method="signround", **SMALL).lr == 1 / 8  # 4 epochs x 2 batches
    assert cal.CalibrateConfig(method="omniquant", **SMALL).lr == 0.5
    assert cal.CalibrateConfig(method="signround", lr=0.01, **SMALL).lr == 0.01


def test_exported_weight_rounds_to_the_learned_codes():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 80, generator=gen)  # a short last group (80 = 32 + 32 + 16)
    q = RoundingQuantizer(w, 3, 32)
    with torch.no_grad():
        q.offset.copy_(torch.rand(q.offset.shape, generator=gen) - 0.5)
        q.max_scale.copy_(0.8 + 0.2 * torch.rand(q.max_scale.shape, generator=gen))
    e = q.export(w)
    learned = quantize_codes(q(w).detach(), e["delta"], e["zero_point"], 3, 32)
    assert e["weight"].dtype == torch.float16
    assert torch.equal(quantize_codes(e["weight"].float(), e["delta"], e["zero_point"], 3, 32), learned)
    assert not torch.equal(learned, quantize_codes(w, e["delta"], e["zero_point"], 3, 32))


def test_no_steps_is_round_to_nearest(tmp_path, llava_dir, corpus):
    cfg = cal.CalibrateConfig(method="signround", bits=3, group_size=32, **{**SMALL, "epochs": 0})
    cal.run(cfg, tmp_path / "r", llava_dir, corpus, bar=False)
    calibration = load_calibrated(read_artifact(tmp_path / "r", "calibrate"))
    named = dict(load_model(llava_dir).model.named_modules())
    for name, q in calibration.layers.items():
        w = named[name].weight.detach()
        delta, zp = rtn_qparams(w, 3, 32)
        assert torch.equal(q.delta, delta) and torch.equal(q.zero_point, zp)
        codes = quantize_codes(calibration.weights[name].float(), delta, zp, 3, 32)
        assert torch.equal(codes, quantize_codes(w, delta, zp, 3, 32))


def test_learned_rounding_lowers_every_block_loss_below_rtn(rounded, llava_dir):
    art = read_artifact(rounded, "calibrate")
    blocks = art.metrics["blocks"]  # loss_before: the block under RTN (offsets 0, full range)
    assert len(blocks) == 2 and all(b["loss_after"] < 0.9 * b["loss_before"] for b in blocks), blocks
    calibration = load_calibrated(art)
    assert calibration.method == "signround" and calibration.weights.keys() == calibration.layers.keys()
    named = dict(load_model(llava_dir).model.named_modules())
    changed = 0
    for name, q in calibration.layers.items():
        w = named[name].weight.detach()
        learned = quantize_codes(calibration.weights[name].float(), q.delta, q.zero_point, 3, 32)
        changed += int((learned != quantize_codes(w, q.delta, q.zero_point, 3, 32)).sum())
    assert changed > 0  # some weights round the other way


def test_learned_codes_carry_through_fold_and_tune(tmp_path, rounded, llava_dir, corpus):
    import shutil

    calibration = load_calibrated(read_artifact(rounded, "calibrate"))
    run = tmp_path / "r"
    run.mkdir()
    shutil.copytree(rounded / "calibrate", run / "calibrate")
    folded = read_folded(fd.run(fd.FoldConfig(), run).artifact.path)
    for name, layer in folded.layers.items():
        q = calibration.layers[name]
        assert torch.equal(
            layer.codes, quantize_codes(calibration.weights[name].float(), q.delta, q.zero_point, 3, 32)
        )
    sqa = tiny_scienceqa(tmp_path / "sqa")
    cfg = tn.TuneConfig(data=str(sqa), steps=2, batch_size=2, warmup_steps=1, text_seqlen=16, lm_lr=2e-2)
    tn.run(cfg, run, llava_dir, corpus, bar=False)
    folded = read_folded(fd.run(fd.FoldConfig(), run, force=True).artifact.path)
    lm, _ = load_tuned(run)
    named = dict(lm.model.named_modules())
    for name, layer in folded.layers.items():
        assert torch.equal(layer.dequantized(), named[name].weight)
