"""ONNX export of a tiny tuned + folded LLaVA: int4 ops from our codes, onnxruntime parity, generate."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from qslaw_pipe.cli import main
from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports.onnx.runtime import OrtVlm
from qslaw_pipe.pipeline.folded import load_folded_model
from qslaw_pipe.stages import export as ex

PROMPT = "What color is the square?"


@pytest.fixture(scope="module")
def folded(folded_run):
    run, image = folded_run
    return run, image, load_folded_model(run / "fold")


def _greedy_torch(lm, ids, pixels, n):
    """n greedy tokens without stopping, from full-sequence PyTorch forwards (no cache)."""
    ids, out = torch.from_numpy(ids), []
    for _ in range(n):
        with torch.no_grad():
            logits = lm.model(input_ids=ids, pixel_values=torch.from_numpy(pixels)).logits
        out.append(int(logits[0, -1].argmax()))
        ids = torch.cat([ids, torch.tensor([[out[-1]]])], dim=1)
    return out, logits[0, -1].numpy()


@pytest.mark.parametrize(
    "op, node, weight_type, decoder, n_int4",
    [
        ("matmulnbits", "MatMulNBits", onnx.TensorProto.UINT8, "built", 8),
        ("qdq", "DequantizeLinear", onnx.TensorProto.UINT4, "built", 8),
        ("matmulnbits", "MatMulNBits", onnx.TensorProto.UINT8, "traced", 14),
        ("qdq", "DequantizeLinear", onnx.TensorProto.UINT4, "traced", 14),
    ],
)
def test_onnx_export_matches_folded_model(folded, op, node, weight_type, decoder, n_int4):
    run, image, lm = folded
    res = ex.run(ex.export_config(int4_op=op, decoder=decoder), run)
    out = res.artifact.path
    graph = onnx.load(str(out / "decoder.onnx")).graph
    int4 = [n for n in graph.node if n.op_type == node]
    # every quantized decoder Linear: 7 per layer traced, 4 built (q/k/v and gate/up fused)
    assert len(int4) == n_int4
    inits = {i.name: i for i in graph.initializer}
    assert all(inits[n.input[1 if op == "matmulnbits" else 0]].data_type == weight_type for n in int4)
    # every graph of the export is readable by onnxruntime 1.20+ (IR <= 10), whatever onnx writes by default
    assert {onnx.load(str(f), load_external_data=False).ir_version for f in out.glob("*.onnx")} <= set(
        range(11)
    )
    vlm = OrtVlm(out, device="cpu")
    ids, images = vlm.encode(PROMPT, image)
    pixels = images["pixel_values"]
    logits, past = vlm.step(vlm.inputs_embeds(ids, images), np.ones_like(ids), vlm.empty_past(1))
    with torch.no_grad():
        ref = lm.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels)).logits.numpy()
    assert np.abs(logits - ref).max() <= 1e-3 * np.abs(ref).max()
    # KV-cache decoding: step-by-step ORT tokens and last logits equal full-sequence PyTorch
    expected, last = _greedy_torch(lm, ids, pixels, 5)
    tokens, mask = [], np.ones_like(ids)
    for _ in range(5):
        tokens.append(int(logits[0, -1].argmax()))
        mask = np.ones((1, mask.shape[1] + 1), np.int64)
        logits, past = vlm.step(vlm.embed.run(None, {"input_ids": np.array([[tokens[-1]]])})[0], mask, past)
    assert tokens == expected
    assert (
        np.abs(
            vlm.step(
                vlm.inputs_embeds(np.concatenate([ids, [tokens[:-1]]], 1), images),
                np.ones((1, ids.shape[1] + 4), np.int64),
                vlm.empty_past(1),
            )[0][0, -1]
            - last
        ).max()
        <= 1e-3 * np.abs(last).max()
    )


@pytest.mark.parametrize("op", ["matmulnbits", "qdq"])
def test_fp16_decoder_runs_in_half_precision_close_to_the_folded_model(folded, op):
    """The CUDA EP's half-precision decoder, checked on the CPU EP (same graph): fp16 activations and KV cache,
    fp16 scales, the folded codes, fp32 logits within fp16 rounding of the folded model's, same greedy tokens."""
    run, image, lm = folded
    out = ex.run(ex.export_config(int4_op=op, precision="fp16"), run).artifact.path
    assert out.name.endswith("-fp16")
    graph = onnx.load(str(out / "decoder.onnx")).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]}
    assert types["inputs_embeds"] == types["past.0.key"] == types["present.0.key"] == onnx.TensorProto.FLOAT16
    assert types["logits"] == onnx.TensorProto.FLOAT
    floats = {i.data_type for i in graph.initializer} & {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    assert floats == {onnx.TensorProto.FLOAT16}
    vlm = OrtVlm(out, device="cpu")
    ids, images = vlm.encode(PROMPT, image)
    pixels = images["pixel_values"]
    logits, past = vlm.step(vlm.inputs_embeds(ids, images), np.ones_like(ids), vlm.empty_past(1))
    assert logits.dtype == np.float32 and past["past.0.key"].dtype == np.float16
    with torch.no_grad():
        ref = lm.model(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels)).logits.numpy()
    err = np.abs(logits - ref).max() / np.abs(ref).max()
    assert 1e-5 < err <= 2e-2  # really half precision, and only its rounding
    expected, _ = _greedy_torch(lm, ids, pixels, 5)
    assert vlm.generate_ids(ids, images, 5) == expected[: len(vlm.generate_ids(ids, images, 5))]


def test_fp16_export_refuses_what_cannot_read_half_precision(folded):
    run, _, _ = folded
    with pytest.raises(QslawError, match="--precision fp16 needs the built decoder.*--int4-op custom"):
        ex.run(ex.export_config(int4_op="custom", precision="fp16"), run)
    with pytest.raises(QslawError, match="--precision applies to --format onnx"):
        ex.export_config(format="torchao", precision="fp16")


def test_onnx_generate_cli_greedy_and_sampling(folded):
    run, image, lm = folded
    out = ex.run(ex.export_config(), run).artifact.path
    path = run / "img.png"
    image.save(path)
    base = [
        "generate",
        "--onnx",
        str(out),
        "--image",
        str(path),
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "6",
        "--json",
    ]
    greedy = CliRunner().invoke(main, base)
    assert greedy.exit_code == 0, greedy.output
    from qslaw_pipe.stages.evaluate.generate import generate

    assert json.loads(greedy.stdout)["answer"] == generate(lm, PROMPT, image, 6)
    sampled = [CliRunner().invoke(main, [*base, "--temperature", "1.5", "--seed", "3"]) for _ in range(2)]
    assert sampled[0].exit_code == 0 and json.loads(sampled[0].stdout) == json.loads(sampled[1].stdout)


def test_custom_op_graph_without_library_names_the_fix(folded, monkeypatch, tmp_path):
    run, _, _ = folded
    from qslaw_pipe.exports.onnx import runtime

    monkeypatch.setattr(runtime, "library_path", lambda: None)  # as on a machine that never built it
    out = ex.run(ex.export_config(int4_op="custom"), run).artifact.path
    assert (
        sum(n.op_type == "MatMulInt4" for n in onnx.load(str(out / "decoder.onnx")).graph.node) == 8
    )  # q/k/v and gate/up fused in the built decoder
    with pytest.raises(QslawError, match="python -m qslaw_pipe.kernels.build"):
        OrtVlm(out, device="cpu")


def test_eval_mcq_in_onnxruntime_gives_the_pytorch_answers(folded):
    from qslaw_pipe.pipeline.artifact import read_artifact
    from qslaw_pipe.stages.evaluate import mcq as eval_mcq

    run, _, _ = folded
    data = read_artifact(run, "tune").config["data"]
    export = str(ex.run(ex.export_config(), run).artifact.path)
    preds = {}
    for onnx_dir in (None, export):
        res = eval_mcq.run_mcq(
            eval_mcq.McqConfig(data=data, limit=0, batch_size=3, onnx=onnx_dir), run, bar=False
        )
        assert res.artifact.metrics["runtime"] == (
            "pytorch" if onnx_dir is None else f"onnxruntime ({Path(export).name})"
        )
        preds[onnx_dir] = [
            json.loads(line)["output"] for line in (res.artifact.path / "predictions.jsonl").open()
        ]
    assert len(preds[None]) == 6 and preds[None] == preds[export]


from tests.helpers.venv import optimum_venv as _optimum_venv  # noqa: E402


def test_text_decoder_loads_in_optimum_and_generates_our_tokens(folded):
    run, _, _ = folded
    out = ex.run(ex.export_config(), run).artifact.path
    python = _optimum_venv()
    if python is None:
        pytest.skip("could not build the optimum-onnx virtual environment (no package index?)")
    vlm = OrtVlm(out, device="cpu")
    ids, _ = vlm.encode(PROMPT, None)
    vlm.stop = set()  # compare a fixed number of tokens
    ours = vlm.generate_ids(ids, None, max_new_tokens=8)
    script = Path(__file__).resolve().parent / "helpers" / "optimum_check.py"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [str(python), str(script), str(out / "text"), json.dumps(ids[0].tolist()), "8"],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(out),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["tokens"] == ours


@pytest.mark.parametrize(
    "op, head, node",
    [
        ("matmulnbits", "int8", "MatMulNBits"),
        ("qdq", "int4", "MatMul"),
        ("custom", "int8", "MatMulInt8"),
        ("custom", "int8-g32", "MatMulInt8"),
        ("matmulnbits", "int8-g32", "MatMulNBits"),
    ],
)
def test_quantized_lm_head_export_matches_its_rtn_weights(folded, op, head, node, request, monkeypatch):
    from qslaw_pipe.exports.onnx.decoder import LM_HEADS
    from qslaw_pipe.exports.onnx.linear import LinearWeights, rtn_linear

    if op == "custom":
        monkeypatch.setenv("QSLAW_ORT_OPS", str(request.getfixturevalue("library")))
    run, image, lm = folded
    out = ex.run(ex.export_config(int4_op=op, lm_head=head), run).artifact.path
    assert out.name.endswith(f"-head{head[3:]}")
    graph = onnx.load(str(out / "decoder.onnx")).graph
    producer = next(n for n in graph.node if "logits" in n.output)
    assert producer.op_type == node
    if node == "MatMulNBits":
        assert next(a.i for a in producer.attribute if a.name == "bits") == 8
    head_w = lm.model.get_output_embeddings().weight.detach()
    rtn = rtn_linear(LinearWeights(head_w.clone()), *LM_HEADS[head]).weight
    assert 0 < (rtn - head_w).abs().max() < 0.2 * head_w.abs().max()  # really quantized, not garbage
    vlm = OrtVlm(out, device="cpu")
    ids, images = vlm.encode(PROMPT, image)
    pixels = images["pixel_values"]
    logits, _ = vlm.step(vlm.inputs_embeds(ids, images), np.ones_like(ids), vlm.empty_past(1))
    with torch.no_grad():
        hidden = lm.model(
            input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels), output_hidden_states=True
        ).hidden_states[-1]
        ref = (hidden @ rtn.t()).numpy()
    assert np.abs(logits - ref).max() <= 1e-3 * np.abs(ref).max()


def test_lm_head_option_refuses_traced_decoder(folded):
    run, _, _ = folded
    with pytest.raises(QslawError, match="--lm-head folded"):
        ex.run(ex.export_config(decoder="traced", lm_head="int8"), run)


def test_decoder_outside_the_built_family_falls_back_to_traced(folded, monkeypatch):
    from qslaw_pipe.exports.onnx.export import decoder_kind

    _, _, lm = folded
    assert decoder_kind(lm.model, "built") == "built"
    monkeypatch.setattr(lm.model.config.get_text_config(), "hidden_act", "gelu")
    with pytest.warns(UserWarning, match="traced, not built: activation gelu"):
        assert decoder_kind(lm.model, "built") == "traced"


def test_int4_export_refuses_layouts_its_op_cannot_hold():
    from qslaw_pipe.exports.onnx.int4_ops import check_int4
    from qslaw_pipe.pipeline.folded import FoldedLayer

    def layers(bits, group):
        codes = torch.zeros(4, 48, dtype=torch.uint8)
        return {"layers.0.q": FoldedLayer(codes, torch.ones(4, 2), codes[:, :2], group, bits)}

    with pytest.raises(QslawError, match="power-of-two group size >= 16, layers.0.q has 24"):
        check_int4(layers(4, 24), "matmulnbits")
    check_int4(layers(4, 24), "qdq")  # blocked DequantizeLinear takes any block size
    with pytest.raises(QslawError, match="--bits 2, 3 or 4"):
        check_int4(layers(8, 32), "custom")
    check_int4(layers(8, 32), "fp32")
