"""Every supported model family end to end on a tiny real-config model (tests/families.py): calibrate ->
tune (qslaw, 2 steps) -> eval mcq -> fold -> ONNX, torchao and compressed-tensors exports -> generate, each
export checked against the folded model (logits and greedy answers), and the prompt checked to hold the
image token and the question in each family's own chat template (both template layouts for LLaVA-1.5)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports.compressed_tensors import decompressed_state
from qslaw_pipe.exports.onnx.runtime import OrtVlm
from qslaw_pipe.exports.torchao import load_torchao
from qslaw_pipe.pipeline.folded import load_folded_model, read_folded
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.prompt import chat_prompt, image_token
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import export as ex
from qslaw_pipe.stages import fold as fd
from qslaw_pipe.stages import tune as tn
from qslaw_pipe.stages.evaluate import mcq
from qslaw_pipe.stages.evaluate.generate import generate
from tests.families import TEXT_LMS, VLMS
from tests.tiny import tiny_scienceqa

MODELS = {**VLMS, **TEXT_LMS}
# how each family's vision side exports (exports/onnx/vision.VISION's rows), and its decoder's positions
VISION_KIND = {
    "llava15": "fixed",
    "llava15-json": "fixed",
    "llava-next": "anyres",
    "llava-onevision": "anyres-max",
    "smolvlm": "tiles",
    "idefics3": "tiles",
    "qwen2-vl": "grid",
    "qwen2.5-vl": "grid",
    "llama": None,
    "qwen2": None,
}
QUESTION = "What color is the square?"


def _image() -> Image.Image:
    """A non-square photo-like image, larger than the towers' input: anyres grids and tile splits occur."""
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (70, 45, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=sorted(MODELS))
def family(request, tmp_path_factory, corpus):
    """(name, run dir, data dir, model dir, folded LoadedModel) after calibrate, tune and fold."""
    name = request.param
    root = tmp_path_factory.mktemp(name.replace(".", "_"))
    model = MODELS[name](root / "model")
    sqa, run = tiny_scienceqa(root / "sqa"), root / "run"
    cal.run(cal.CalibrateConfig(method="rtn", bits=4, group_size=32), run, model, corpus, bar=False)
    data = "text" if name in TEXT_LMS else str(sqa)
    cfg = tn.TuneConfig(data=data, steps=2, batch_size=2, warmup_steps=1, text_seqlen=16, compile=False)
    tn.run(cfg, run, model, corpus, bar=False)
    fd.run(fd.FoldConfig(), run)
    return name, run, sqa, model, load_folded_model(run / "fold")


def _torch_inputs(lm, image) -> dict:
    with_image = lm.multimodal
    text = chat_prompt(lm.processor, QUESTION, with_image=with_image)
    if with_image:
        return dict(lm.processor(images=image, text=text, return_tensors="pt"))
    return dict(lm.tokenizer(text, return_tensors="pt", add_special_tokens=False))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_tune_trained_the_scales_and_eval_mcq_scores(family):
    name, run, sqa, _, _ = family
    tuned = read_folded(run / "fold")
    assert tuned.source == "tune" and tuned.method == "qslaw" and tuned.layers
    m = mcq.run_mcq(mcq.McqConfig(data=str(sqa), limit=3, device="cpu"), run, bar=False).artifact.metrics
    assert m["n"] == 3 and 0 <= m["accuracy"] <= 1


def test_onnx_export_gives_the_folded_models_logits_and_answers(family):
    name, run, sqa, _, folded = family
    out = ex.run(ex.export_config(format="onnx", int4_op="matmulnbits"), run).artifact.path
    assert (out / "vision.onnx").is_file() == (name in VLMS)
    spec = json.loads((out / "qslaw_onnx.json").read_text())
    assert spec["vision"] == VISION_KIND[name] and spec["positions"] == (
        "mrope" if "qwen2" in name and "vl" in name else "1d"
    )
    vlm, image = OrtVlm(out, device="cpu"), _image()
    ids, inputs = vlm.encode(QUESTION, image)
    positions, _ = vlm.prefill_positions(ids, inputs)
    logits, _ = vlm.step(vlm.inputs_embeds(ids, inputs), np.ones_like(ids), vlm.empty_past(1), positions)
    ref_inputs = _torch_inputs(folded, image)
    assert np.array_equal(ref_inputs["input_ids"].numpy(), ids)
    with torch.no_grad():
        ref = folded.model(**ref_inputs).logits.numpy()
    assert _relative(logits, ref) <= 1e-5
    answer = generate(folded, QUESTION, image, max_new_tokens=6)
    assert vlm.generate(QUESTION, image, max_new_tokens=6) == answer
    cfg = mcq.McqConfig(data=str(sqa), limit=2, onnx=str(out), device="cpu")
    assert mcq.run_mcq(cfg, run, bar=False).artifact.metrics["n"] == 2


def test_torchao_export_gives_the_folded_models_logits_and_answers(family):
    _, run, _, _, folded = family
    out = ex.run(ex.export_config(format="torchao"), run).artifact.path
    lm, image = (
        load_torchao(out, dtype="fp32"),
        _image(),
    )  # the exact path; bf16: tests/test_export_torchao.py
    with torch.no_grad():
        got = lm.model(**_torch_inputs(lm, image)).logits.numpy()
        ref = folded.model(**_torch_inputs(folded, image)).logits.numpy()
    assert _relative(got, ref) <= 1e-5
    assert generate(lm, QUESTION, image, 6) == generate(folded, QUESTION, image, 6)
    assert generate(load_model(out), QUESTION, image, 6) == generate(folded, QUESTION, image, 6)


def test_compressed_tensors_checkpoint_holds_the_folded_weights_within_its_scale_rounding(family):
    _, run, _, _, _ = family
    res = ex.run(ex.export_config(format="compressed-tensors", dtype="fp16"), run)
    state, folded = decompressed_state(res.artifact.path), read_folded(run / "fold")
    # W = scale * (q - zp) with q and zp exact: each weight off by its scale's rounding, plus fp16's rounding
    # of the product where the decompressor computes it in fp16
    bound = res.artifact.metrics["scale_max_relative_rounding"] + 2.0**-11
    for name, layer in folded.layers.items():
        ref = layer.dequantized()
        assert ((state[f"{name}.weight"] - ref).abs() <= bound * ref.abs() + 1e-12).all()


def test_generate_on_the_fold_directory_is_the_folded_model(family):
    _, run, _, _, folded = family
    image = _image()
    assert generate(load_model(run / "fold"), QUESTION, image, 6) == generate(folded, QUESTION, image, 6)


@pytest.mark.parametrize("name", sorted(VLMS))
def test_the_prompt_holds_the_image_token_and_the_question(name, tmp_path):
    lm = load_model(VLMS[name](tmp_path / "m"))
    text = chat_prompt(lm.processor, QUESTION, with_image=True)
    assert text.count(image_token(lm.processor)) == 1 and QUESTION in text
    assert QUESTION in chat_prompt(lm.processor, QUESTION, with_image=False)
    if name.startswith("llava15"):  # the llava-hf template, both layouts: content parts, not a string
        assert text == f"USER: <image>\n{QUESTION} ASSISTANT:"


def test_a_template_that_drops_the_question_is_one_line_error(tmp_path):
    lm = load_model(VLMS["llava15"](tmp_path / "m"))
    lm.processor.chat_template = "{% for m in messages %}USER: {% endfor %}ASSISTANT:"
    with pytest.raises(QslawError, match="drops the image token or the question"):
        chat_prompt(lm.processor, QUESTION, with_image=True)


def test_an_unsupported_multimodal_family_is_one_line(tmp_path, corpus):
    import json

    from click.testing import CliRunner

    from qslaw_pipe.cli import main

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "paligemma", "vision_config": {}}))
    res = CliRunner().invoke(main, ["calibrate", "--run-dir", str(tmp_path / "r"), "--model", str(model)])
    assert res.exit_code == 2 and res.output.count("error:") == 1
    assert "model type paligemma is a multimodal family qslaw-pipe has no adapter for" in res.output


def test_a_model_directory_missing_weights_is_refused_not_filled_at_random(tmp_path):
    from safetensors.torch import load_file, save_file

    model = VLMS["llava15"](tmp_path / "m")
    weights = load_file(str(model / "model.safetensors"))
    dropped = next(k for k in weights if "layers.0.mlp.down_proj" in k)
    save_file({k: v for k, v in weights.items() if k != dropped}, str(model / "model.safetensors"))
    with pytest.raises(QslawError, match="lack 1 of the model's tensors"):
        load_model(model)
