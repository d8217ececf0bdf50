"""`calibrate --from-checkpoint`: GPTQ, AWQ, AutoRound and compressed-tensors checkpoints imported exactly
(imported, then folded: the checkpoint's codes and scales bit for bit), QSLAW tuned from one, and what does
not fit refused with one line."""

import pytest
import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.pack import unpack_bits
from qslaw_pipe.kernels.quant import dequantize_codes
from qslaw_pipe.pipeline.folded import read_folded
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.targeting import quantized_names, resolve_targets
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import fold as fd
from qslaw_pipe.stages import tune as tn
from qslaw_pipe.stages.evaluate.tuned_model import load_tuned
from tests.helpers import peer_formats as pf
from tests.tiny import tiny_scienceqa


@pytest.fixture(scope="module")
def shapes(llava_dir):
    model = load_model(llava_dir).model
    named = dict(model.named_modules())
    return {t: tuple(named[t].weight.shape) for t in quantized_names(resolve_targets(model, []))}


def _text_lm_name(name: str) -> str:
    """What a text-only checkpoint of the language model calls the layer."""
    return "model." + name[name.index("layers.") :]


# format, quantization_config, bits, group, writer, symmetric, names as a text LM's
CASES = {
    "gptq v1 asymmetric": (
        {"quant_method": "gptq", "desc_act": False, "sym": False},
        4,
        32,
        pf.gptq_tensors,
        False,
        True,
    ),
    "gptq v1 symmetric": (
        {"quant_method": "gptq", "desc_act": False, "sym": True},
        4,
        32,
        pf.gptq_tensors,
        True,
        False,
    ),
    "gptq v2 3-bit": (
        {"quant_method": "gptq", "checkpoint_format": "gptq_v2"},
        3,
        32,
        lambda *a: pf.gptq_tensors(*a, zero_offset=0),
        False,
        False,
    ),
    "gptq 8-bit per channel": ({"quant_method": "gptq"}, 8, -1, pf.gptq_tensors, False, False),
    "awq gemm": (
        {"quant_method": "awq", "version": "gemm", "zero_point": True},
        4,
        32,
        pf.awq_tensors,
        False,
        True,
    ),
    "auto-round auto_gptq": (
        {"quant_method": "auto-round", "packing_format": "auto_round:auto_gptq"},
        4,
        32,
        pf.gptq_tensors,
        False,
        False,
    ),
    "auto-round own packing, 2-bit": (
        {"quant_method": "auto-round", "packing_format": "auto_round:exllamav2"},
        2,
        64,
        lambda *a: pf.gptq_tensors(*a, zero_offset=0),
        False,
        False,
    ),
    "auto-round auto_awq": (
        {"quant_method": "auto-round", "packing_format": "auto_round:auto_awq"},
        4,
        64,
        pf.awq_tensors,
        False,
        False,
    ),
    "compressed-tensors symmetric 8-bit": (
        {"quant_method": "compressed-tensors", "format": "pack-quantized"},
        8,
        32,
        lambda *a: pf.ct_tensors(*a, symmetric=True),
        True,
        False,
    ),
}


def _ct_groups(qc: dict, bits: int, group: int, symmetric: bool) -> dict:
    strategy = "channel" if group == -1 else "group"
    weights = {"num_bits": bits, "type": "int", "symmetric": symmetric, "strategy": strategy}
    if group != -1:
        weights["group_size"] = group
    return {**qc, "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}


def _write(tmp_path, llava_dir, shapes, case: str):
    qc, bits, group, writer, symmetric, text_names = CASES[case]
    layers, packed = {}, {}
    for i, (name, shape) in enumerate(sorted(shapes.items())):
        gs = shape[1] if group == -1 else group
        codes, delta, zp = pf.random_layer(shape, bits, gs, seed=i, symmetric=symmetric)
        layers[name] = (codes, delta, zp)
        packed[_text_lm_name(name) if text_names else name] = writer(codes, delta, zp, bits, gs)
    if qc["quant_method"] == "compressed-tensors":
        qc = _ct_groups(qc, bits, group, symmetric)
    else:
        qc = {**qc, "bits": bits, "group_size": group}
    return pf.write_checkpoint(tmp_path / "ckpt", llava_dir, packed, qc), layers, bits, group


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_bit_streams_unpack_as_compressed_tensors_packs_them(bits):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    for cols in (32, 40, 96, 576):
        v = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), (3, cols), dtype=torch.int8)
        got = unpack_bits(pack_to_int32(v, bits), bits, cols) - 2 ** (bits - 1)
        assert torch.equal(got.to(torch.int8), v)
        assert torch.equal(
            pf.pack_stream((v.to(torch.int64) + 2 ** (bits - 1)), bits), pack_to_int32(v, bits)
        )


@pytest.mark.parametrize("case", list(CASES))
def test_imported_then_folded_codes_are_the_checkpoints(tmp_path, llava_dir, corpus, shapes, case):
    ckpt, layers, bits, group = _write(tmp_path, llava_dir, shapes, case)
    cfg = cal.CalibrateConfig(method="checkpoint", from_checkpoint=str(ckpt), bits=bits, group_size=group)
    res = cal.run(cfg, tmp_path / "r", llava_dir, corpus, bar=False)
    assert res.artifact.metrics["imported"]["layers"] == len(shapes)
    folded = read_folded(fd.run(fd.FoldConfig(), tmp_path / "r").artifact.path)
    assert folded.layers.keys() == layers.keys()
    for name, (codes, delta, zp) in layers.items():
        got = folded.layers[name]
        assert torch.equal(got.codes, codes) and torch.equal(got.zero_point, zp)
        assert torch.equal(got.delta.float(), delta)
        assert torch.equal(got.dequantized(), dequantize_codes(codes, delta, zp, got.group_size))


def test_our_compressed_tensors_export_imports_to_its_own_codes(tmp_path, folded_run, llava_dir, corpus):
    from qslaw_pipe.exports.compressed_tensors import decompressed_state
    from qslaw_pipe.stages import export as ex

    run, _ = folded_run
    out = ex.run(ex.export_config(format="compressed-tensors", dtype="fp32"), run).artifact.path
    group = ex.run(ex.export_config(format="compressed-tensors", dtype="fp32"), run).artifact.metrics[
        "group_size"
    ]
    cfg = cal.CalibrateConfig(method="checkpoint", from_checkpoint=str(out), bits=4, group_size=group)
    cal.run(cfg, tmp_path / "r", llava_dir, corpus, bar=False)
    again = read_folded(fd.run(fd.FoldConfig(), tmp_path / "r").artifact.path)
    original = read_folded(run / "fold")
    peer = decompressed_state(out)  # compressed-tensors' own decompressor
    for name, layer in original.layers.items():
        assert torch.equal(again.layers[name].codes, layer.codes)
        assert torch.equal(again.layers[name].dequantized(), peer[f"{name}.weight"])


def test_qslaw_tunes_from_an_import_and_folds_exactly(tmp_path, llava_dir, corpus, shapes):
    ckpt, layers, bits, group = _write(tmp_path, llava_dir, shapes, "gptq v1 asymmetric")
    run = tmp_path / "r"
    cal.run(
        cal.CalibrateConfig(method="checkpoint", from_checkpoint=str(ckpt), bits=bits, group_size=group),
        run,
        llava_dir,
        corpus,
        bar=False,
    )
    sqa = tiny_scienceqa(tmp_path / "sqa")
    tn.run(
        tn.TuneConfig(data=str(sqa), steps=2, batch_size=2, warmup_steps=1, text_seqlen=16, lm_lr=2e-2),
        run,
        llava_dir,
        corpus,
        bar=False,
    )
    folded = read_folded(fd.run(fd.FoldConfig(), run).artifact.path)
    lm, _ = load_tuned(run)
    named = dict(lm.model.named_modules())
    same = 0
    for name, layer in folded.layers.items():
        assert torch.equal(layer.dequantized(), named[name].weight)
        same += int((layer.codes == layers[name][0]).sum())
    assert same > 0.9 * sum(c.numel() for c, _, _ in layers.values())  # QSLAW moves scales, few codes


def _refused(tmp_path, llava_dir, corpus, ckpt, bits=4, group=32, match=""):
    cfg = cal.CalibrateConfig(method="checkpoint", from_checkpoint=str(ckpt), bits=bits, group_size=group)
    with pytest.raises(QslawError, match=match) as e:
        cal.run(cfg, tmp_path / "r", llava_dir, corpus, bar=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r" / "calibrate").exists()


def test_what_does_not_fit_is_refused_with_one_line(tmp_path, llava_dir, corpus, shapes):
    ckpt, layers, _, _ = _write(tmp_path, llava_dir, shapes, "gptq v1 asymmetric")
    _refused(tmp_path, llava_dir, corpus, ckpt, bits=3, match="pass --bits 4")
    _refused(tmp_path, llava_dir, corpus, ckpt, group=64, match="pass --group-size 32")
    name, shape = next(iter(sorted(shapes.items())))
    codes, delta, zp = layers[name]
    perm = torch.randperm(shape[1], generator=torch.Generator().manual_seed(0)) // 32
    permuted = {_text_lm_name(name): pf.gptq_tensors(codes, delta, zp, 4, 32, g_idx=perm)}
    act = pf.write_checkpoint(
        tmp_path / "act", llava_dir, permuted, {"quant_method": "gptq", "bits": 4, "group_size": 32}
    )
    _refused(tmp_path, llava_dir, corpus, act, match="act order")
    one = {_text_lm_name(name): pf.gptq_tensors(codes, delta, zp, 4, 32)}
    partial = pf.write_checkpoint(
        tmp_path / "one", llava_dir, one, {"quant_method": "gptq", "bits": 4, "group_size": 32}
    )
    _refused(
        tmp_path, llava_dir, corpus, partial, match=f"no quantized weight for {len(shapes) - 1} targeted"
    )
    awq3 = pf.write_checkpoint(
        tmp_path / "awq3", llava_dir, {}, {"quant_method": "awq", "bits": 3, "group_size": 32}
    )
    _refused(tmp_path, llava_dir, corpus, awq3, bits=3, match="3 bits is not one we import")
    other = pf.write_checkpoint(tmp_path / "other", llava_dir, {}, {"quant_method": "bitsandbytes"})
    _refused(tmp_path, llava_dir, corpus, other, match="not one we import")
    plain = pf.write_checkpoint(tmp_path / "plain", llava_dir, {}, {})
    _refused(tmp_path, llava_dir, corpus, plain, match="no quantization_config")
    with pytest.raises(QslawError, match="--from-checkpoint"):
        cal.CalibrateConfig(method="checkpoint")
    with pytest.raises(QslawError, match="--from-checkpoint"):
        cal.CalibrateConfig(method="omniquant", from_checkpoint=str(ckpt))


def test_the_cli_flag_implies_the_method_and_refuses_another(tmp_path, llava_dir, corpus, shapes):
    from click.testing import CliRunner

    from qslaw_pipe.cli import main

    ckpt, _, _, _ = _write(tmp_path, llava_dir, shapes, "awq gemm")
    base = ["calibrate", "--model", str(llava_dir), "--text", str(corpus), "--from-checkpoint", str(ckpt)]
    ok = CliRunner().invoke(
        main, [*base, "--run-dir", str(tmp_path / "r"), "--bits", "4", "--group-size", "32"]
    )
    assert ok.exit_code == 0, ok.output
    assert "checkpoint, W4" in ok.output
    bad = CliRunner().invoke(main, [*base, "--run-dir", str(tmp_path / "s"), "--method", "omniquant"])
    assert bad.exit_code == 2 and bad.output.count("error:") == 1 and "--from-checkpoint" in bad.output
