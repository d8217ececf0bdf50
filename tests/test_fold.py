"""Pack/unpack round trip; fold reproduces tune's fake-quant weights exactly; calibrate-only fold; errors."""

import shutil

import pytest
import torch
from click.testing import CliRunner

from qslaw_pipe.cli import main
from qslaw_pipe.kernels.pack import pack_int4, unpack_int4, unpack_int4_reference
from qslaw_pipe.pipeline.artifact import read_artifact
from qslaw_pipe.pipeline.folded import load_folded_model, read_folded
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import apply_fake_quant, load_calibrated
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import fold as fd
from qslaw_pipe.stages import tune as tn
from qslaw_pipe.stages.evaluate.tuned_model import load_tuned
from tests.tiny import tiny_scienceqa


@pytest.mark.parametrize("shape", [(3, 8), (5, 7), (1, 1), (4, 577)])
def test_pack_unpack_round_trip(shape):
    codes = torch.randint(0, 16, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    packed = pack_int4(codes)
    assert packed.shape == (shape[0], (shape[1] + 1) // 2)
    assert int(packed[0, 0]) == int(codes[0, 0]) | (int(codes[0, 1]) << 4 if shape[1] > 1 else 0)
    assert torch.equal(unpack_int4(packed, shape[1]), codes)
    assert torch.equal(unpack_int4_reference(packed, shape[1]), codes)


def test_pack_rejects_wide_codes():
    with pytest.raises(ValueError, match="codes < 16"):
        pack_int4(torch.tensor([[16, 0]], dtype=torch.uint8))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, llava_dir, corpus):
    run = tmp_path_factory.mktemp("fold") / "r"
    sqa = tiny_scienceqa(tmp_path_factory.mktemp("sqa"))
    cal.run(cal.CalibrateConfig(method="rtn", bits=4, group_size=32), run, llava_dir, corpus, bar=False)
    cfg = tn.TuneConfig(data=str(sqa), steps=4, batch_size=2, warmup_steps=1, text_seqlen=16, lm_lr=2e-2)
    tn.run(cfg, run, llava_dir, corpus, bar=False)
    return run


def test_fold_equals_tuned_fake_quant_exactly(tuned):
    res = fd.run(fd.FoldConfig(), tuned)
    # g32: 4 bits + (fp32 delta + uint8 zero point) / 32 per weight, vs 16 bits
    assert (
        res.artifact.metrics["source"] == "tune"
        and res.artifact.metrics["quantized_ratio"] == (0.5 + 5 / 32) / 2
    )
    folded = read_folded(res.artifact.path)
    lm, _ = load_tuned(tuned)
    named = dict(lm.model.named_modules())
    moved = 0
    for name, layer in folded.layers.items():
        assert torch.equal(layer.dequantized(), named[name].weight)
        moved += not torch.equal(layer.codes, layer.codes.clone().zero_())
    assert moved == len(folded.layers)
    folded = load_folded_model(res.artifact.path)
    ids = torch.tensor([[5, 9, 17, 33, 2]])
    with torch.no_grad():
        assert torch.equal(folded.model(input_ids=ids).logits, lm.model(input_ids=ids).logits)


def test_fold_calibrate_only_matches_fake_quant(tmp_path, tuned, llava_dir):
    run = tmp_path / "c"
    run.mkdir()
    shutil.copytree(tuned / "calibrate", run / "calibrate")
    res = fd.run(fd.FoldConfig(), run)
    folded = read_folded(res.artifact.path)
    assert folded.source == "calibrate"
    calibration = load_calibrated(read_artifact(run, "calibrate"))
    ref = apply_fake_quant(calibration.apply(load_model(llava_dir).model), calibration.layers)
    named = dict(ref.named_modules())
    for name, layer in folded.layers.items():
        assert torch.equal(layer.dequantized(), named[name].weight)


def test_fold_refuses_fp_tune_with_one_line(tmp_path, tuned, llava_dir, corpus):
    run = tmp_path / "fp"
    run.mkdir()
    shutil.copytree(tuned / "calibrate", run / "calibrate")
    sqa = tiny_scienceqa(tmp_path / "sqa")
    tn.run(
        tn.TuneConfig(method="fp", data=str(sqa), steps=1, batch_size=2, text_seqlen=16),
        run,
        llava_dir,
        corpus,
        bar=False,
    )
    res = CliRunner().invoke(main, ["fold", "--run-dir", str(run)])
    assert res.exit_code == 2 and "--method fp" in res.output and "--source calibrate" in res.output
    assert not (run / "fold").exists()
