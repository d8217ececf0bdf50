"""A tiny LLaVA through the loader, targeting rules and generate; the CLI on real files."""

import json

import pytest
import torch
from click.testing import CliRunner

from qslaw_pipe.cli import main
from qslaw_pipe.pipeline import modules
from qslaw_pipe.pipeline.data.images import open_image
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.targeting import parse_rule, quantized_names, resolve_targets
from qslaw_pipe.stages.evaluate.generate import generate
from tests.tiny import tiny_llama, tiny_tokenizer, write_png


def test_default_targets_are_decoder_linears(llava_dir):
    lm = load_model(llava_dir)
    assert lm.multimodal
    decisions = resolve_targets(lm.model)
    targets = quantized_names(decisions)
    assert len(targets) == 2 * 7  # q k v o gate up down in each of 2 layers
    layers = modules.module_name(lm.model, modules.decoder_layers(lm.model))
    assert all(t.startswith(layers + ".") for t in targets)
    skipped = [n for n, d in decisions.items() if d["action"] == "skip"]
    assert any("projector" in n for n in skipped) and any("vision" in n for n in skipped)
    assert any(n.endswith("lm_head") for n in skipped)


def test_user_rules_come_first(llava_dir):
    lm = load_model(llava_dir)
    decisions = resolve_targets(lm.model, [parse_rule("re:mlp\\.down_proj$=skip")])
    assert len(quantized_names(decisions)) == 12
    assert all(
        d["rule"] == "re:mlp\\.down_proj$=skip" for n, d in decisions.items() if n.endswith("down_proj")
    )
    with pytest.raises(Exception, match="PATTERN=quantize"):
        parse_rule("mlp")


def test_causal_lm_targets(tmp_path):
    tok = tiny_tokenizer()
    lm = tiny_llama(len(tok))
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    loaded = load_model(tmp_path / "lm")
    assert not loaded.multimodal
    assert len(quantized_names(resolve_targets(loaded.model))) == 14


def test_generate_with_image_returns_text(llava_dir, tmp_path):
    lm = load_model(llava_dir)
    img = open_image(write_png(tmp_path / "x.png"))
    out = generate(lm, "What is the red shape?", img, max_new_tokens=5)
    assert isinstance(out, str)
    inputs = lm.processor(images=img, text="<image>\nhi", return_tensors="pt")
    n_img = (inputs["input_ids"] == lm.model.config.image_token_id).sum().item()
    assert n_img == lm.model.config.image_seq_length == 4  # 28 px / 14 = 2 x 2 patches
    with torch.no_grad():
        assert torch.isfinite(lm.model(**inputs).logits).all()


def test_cli_generate_json_and_errors(llava_dir, tmp_path):
    runner = CliRunner()
    img = write_png(tmp_path / "x.png")
    res = runner.invoke(
        main,
        [
            "generate",
            "--model",
            str(llava_dir),
            "--image",
            str(img),
            "--prompt",
            "hi",
            "--max-new-tokens",
            "3",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "answer" in json.loads(res.stdout)
    res = runner.invoke(main, ["generate", "--model", str(tmp_path), "--prompt", "hi"])
    assert res.exit_code == 2 and "error: no model at" in res.output
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    res = runner.invoke(main, ["generate", "--model", str(llava_dir), "--image", str(bad), "--prompt", "hi"])
    assert res.exit_code == 2 and "cannot read image" in res.output
