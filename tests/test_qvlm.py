"""calibrate --method qvlm on a tiny LLaVA: the entropy partition, joint block reconstruction, resume."""

import pytest
import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages.calibrate import qvlm

SMALL = dict(bits=3, group_size=32, nsamples=4, seqlen=16, epochs=4, batch_size=2, lr=2e-2)


def _qparams(run):
    return load_tensors(run / "calibrate" / "qparams.safetensors")[0]


@pytest.mark.parametrize(
    "entropies, max_block, quantile",
    [
        ([1.0] * 7, 3, 0.5),
        ([3, 1, 1, 5, 1, 1, 1, 6], 3, 0.75),
        ([2, 1], 1, 1.0),
        ([4.0], 3, 0.5),
        ([1, 2, 3, 4], 10, 0.0),
    ],
)
def test_partition_is_a_contiguous_cover_within_the_budget(entropies, max_block, quantile):
    spans = qvlm.partition(entropies, max_block, quantile)
    assert spans[0][0] == 0 and spans[-1][1] == len(entropies)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(0 < end - first <= max_block for first, end in spans)


def test_partition_cuts_where_the_entropy_is_high():
    assert qvlm.partition([3, 1, 1, 5, 1, 1, 1, 6], 3, 0.75) == [(0, 3), (3, 6), (6, 7), (7, 8)]
    assert qvlm.partition([1, 2, 3, 4], 10, 0.0) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert qvlm.partition([5, 1, 1, 1], 10, 1.0) == [(0, 4)]


def test_token_entropy_of_uniform_and_peaked_inputs():
    uniform = torch.ones(2, 8, 3)
    peaked = torch.zeros(2, 8, 3)
    peaked[:, 0] = 1
    assert qvlm.token_entropy(uniform) == pytest.approx(torch.log(torch.tensor(8.0)).item(), rel=1e-5)
    assert qvlm.token_entropy(peaked) == pytest.approx(0.0, abs=1e-5)


def test_blocks_of_one_layer_are_the_layerwise_path(tmp_path, llava_dir, corpus):
    cal.run(cal.CalibrateConfig(method="omniquant", **SMALL), tmp_path / "omni", llava_dir, corpus, bar=False)
    res = cal.run(
        cal.CalibrateConfig(method="qvlm", max_block=1, **SMALL), tmp_path / "q", llava_dir, corpus, bar=False
    )
    a, b = _qparams(tmp_path / "omni"), _qparams(tmp_path / "q")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m = res.artifact.metrics
    assert m["partition"] == [[0, 1], [1, 2]] and len(m["entropies"]) == 2
    assert (res.artifact.path / "entropy.png").stat().st_size > 1000


def test_a_joint_block_trains_both_layers_together(tmp_path, llava_dir, corpus, monkeypatch):
    monkeypatch.setattr(qvlm, "partition", lambda e, m, q: [(0, 2)])
    res = cal.run(cal.CalibrateConfig(method="qvlm", **SMALL), tmp_path / "r", llava_dir, corpus, bar=False)
    (block,) = res.artifact.metrics["blocks"]
    assert block["layers"] == [0, 2] and block["loss_after"] < block["loss_before"]
    omni = cal.run(
        cal.CalibrateConfig(method="omniquant", **SMALL), tmp_path / "o", llava_dir, corpus, bar=False
    )
    assert len(omni.artifact.metrics["blocks"]) == 2
    q, o = _qparams(tmp_path / "r"), _qparams(tmp_path / "o")
    assert q.keys() == o.keys() and len(q) == 14 * 4
    assert any(not torch.equal(q[k], o[k]) for k in q if k.endswith("lwc_upper"))


def test_bad_qvlm_settings_are_one_line():
    with pytest.raises(QslawError, match="max-block 0"):
        cal.CalibrateConfig(method="qvlm", max_block=0)
    with pytest.raises(QslawError, match="entropy-quantile 1.5"):
        cal.CalibrateConfig(method="qvlm", entropy_quantile=1.5)


def test_per_token_activation_quantization():
    from qslaw_pipe.kernels.quant import fake_quant_per_token

    x = torch.tensor([[0.0, 1.0, 2.0, 3.0], [-1.0, 0.5, 0.25, 1.0]])
    assert torch.equal(fake_quant_per_token(x[:1], 2), x[:1])  # 4 levels hold 0..3 exactly
    y = fake_quant_per_token(x, 8)
    assert (y - x).abs().max() <= (2.0 / 255) / 2 + 1e-7  # half a step of the widest row's range
    assert not torch.equal(fake_quant_per_token(x, 2), x)


def test_eval_ppl_simulates_activation_bits(tmp_path, llava_dir, corpus):
    from qslaw_pipe.stages.evaluate.ppl import PplConfig, run_ppl

    run = tmp_path / "r"
    cal.run(cal.CalibrateConfig(method="rtn", bits=4, group_size=32), run, llava_dir, corpus, bar=False)
    w4 = run_ppl(PplConfig(seqlen=16, windows=4), run, llava_dir, corpus).artifact.metrics
    w4a4 = run_ppl(
        PplConfig(seqlen=16, windows=4, act_bits=4), run, llava_dir, corpus, force=True
    ).artifact.metrics
    assert w4a4["quantizer"].startswith("rtn W4A4") and w4a4["fp"] == w4["fp"]
    assert w4a4["quantized"] != w4["quantized"]
    with pytest.raises(QslawError, match="act-bits 1"):
        PplConfig(act_bits=1)
