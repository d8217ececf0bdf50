"""Stage-1 alignment: captions from easy-VQA's labels; the projector method trains the projector alone;
`align --ship` writes the package's projector tied to its base model; prepare loads it (or refuses a
projector made for another model); the real shipped projector fits the real default model."""

import json

import pytest
import torch
from click.testing import CliRunner

from qslaw_pipe.cli import main
from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline import aligned, modules
from qslaw_pipe.pipeline.data.captions import captions_from_questions
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.stages.prepare.stage import PrepareConfig, load_shipped_projector
from qslaw_pipe.stages.tune.loop import train_step
from qslaw_pipe.stages.tune.methods import build_method_model
from tests.tiny import tiny_scienceqa


def test_captions_name_colour_and_shape_from_the_questions():
    questions = [
        "what color is the triangle?",
        "is there not a circle?",
        "what shape is in the image?",
        "is there a red shape?",
    ]
    answers = ["blue", "yes", "circle", "no"]
    samples = captions_from_questions(
        questions, answers, [0, 0, 1, 1], {0: "a.png", 1: "b.png"}, ["blue", "red", "circle", "yes", "no"]
    )
    assert [s.target for s in samples] == ["A blue triangle.", "A circle."]
    assert samples[0].meta == {"color": "blue", "shape": "triangle", "index": 0}


def test_projector_method_trains_the_projector_alone(llava_dir, tmp_path):
    from qslaw_pipe.pipeline.data.sets import load_train_samples
    from qslaw_pipe.stages.tune.batches import StepSampler, collate

    before = load_model(llava_dir).model.state_dict()
    lm = build_method_model(llava_dir, "projector", None)
    lm.model.train()
    trainable = {n for n, p in lm.model.named_parameters() if p.requires_grad}
    projector = set(modules.projector_parameters(lm.model))
    assert trainable == projector
    opt = torch.optim.AdamW([p for p in lm.model.parameters() if p.requires_grad], lr=1e-2)
    sampler = StepSampler(
        lm.processor, lm.arch, load_train_samples(str(tiny_scienceqa(tmp_path / "sqa"))), [], 2, 10, (1, 0), 0
    )
    for step in range(2):
        train_step(lm.model, opt, collate(sampler.examples(step), 0))
    after = lm.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= {k for k in before if "multi_modal_projector" in k}


def test_align_ships_a_projector_that_prepare_loads_and_checks(llava_dir, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(aligned, "ASSETS", tmp_path / "assets")
    monkeypatch.setenv("QSLAW_TEXT", str(corpus))
    sqa = tiny_scienceqa(tmp_path / "sqa")
    args = ["align", "--run-dir", str(tmp_path / "r"), "--model", str(llava_dir), "--data", str(sqa)]
    res = CliRunner().invoke(main, [*args, "--steps", "2", "--batch-size", "2", "--ship", "--json"])
    assert res.exit_code == 0, res.output
    tensors_path, manifest_path = aligned.asset_paths(28)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["steps"] == 2 and manifest["base"]["sources"] == {}  # a model prepare did not build
    model = load_model(llava_dir).model
    info = load_shipped_projector(model, PrepareConfig(image_size=28), {})
    shipped = aligned.read_shipped(28).tensors
    assert info["projector"] == "aligned" and info["base_fingerprint"] == manifest["base"]
    assert all(torch.equal(dict(model.named_parameters())[k], v) for k, v in shipped.items())
    with pytest.raises(QslawError, match=r"aligned on another base model \(its source files differ\)"):
        load_shipped_projector(model, PrepareConfig(image_size=28), {"gguf": "0" * 64})
    with torch.no_grad():
        modules.decoder(model).norm.weight.add_(1e-3)  # another LM, the projector aside
    with pytest.raises(QslawError, match=r"\(its weights differ\)"):
        load_shipped_projector(model, PrepareConfig(image_size=28), {})
    fresh = load_model(llava_dir).model
    with torch.no_grad():
        fresh.model.multi_modal_projector.linear_1.weight.add_(
            1.0
        )  # only the projector differs: it still fits
    assert load_shipped_projector(fresh, PrepareConfig(image_size=28), {})["projector"] == "aligned"
