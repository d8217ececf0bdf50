"""Stage tune on a tiny LLaVA: what trains, the warmup schedule, resume equality, baselines, eval mcq."""

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from qslaw_pipe.cli import main
from qslaw_pipe.pipeline.artifact import read_artifact
from qslaw_pipe.pipeline.data.sample import Sample
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import tune as tn
from qslaw_pipe.stages.evaluate.scoring import parse_letter, score
from qslaw_pipe.stages.tune import loop
from qslaw_pipe.stages.tune.batches import collate, modalities
from qslaw_pipe.stages.tune.loss import batch_loss
from qslaw_pipe.stages.tune.methods import build_method_model
from tests.tiny import tiny_scienceqa


@pytest.fixture(scope="module")
def sqa(tmp_path_factory):
    return tiny_scienceqa(tmp_path_factory.mktemp("sqa"))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, llava_dir, corpus):
    run = tmp_path_factory.mktemp("run") / "r"
    cal.run(cal.CalibrateConfig(method="rtn", bits=4, group_size=32), run, llava_dir, corpus, bar=False)
    return run


def _cfg(sqa, **kw):
    base = dict(
        data=str(sqa), steps=6, batch_size=2, warmup_steps=2, text_seqlen=16, checkpoint_every=2, lm_lr=1e-2
    )
    return tn.TuneConfig(**{**base, **kw})


def _copy_calibration(src, dst):
    import shutil

    shutil.copytree(src / "calibrate", dst / "calibrate")
    return dst


def test_only_scales_and_projector_get_gradients(llava_dir, calibrated, sqa, corpus):
    lm = build_method_model(llava_dir, "qslaw", read_artifact(calibrated, "calibrate"))
    from qslaw_pipe.pipeline.data.sets import load_train_samples
    from qslaw_pipe.stages.tune.batches import StepSampler
    from qslaw_pipe.stages.tune.config import parse_mix

    sampler = StepSampler(
        lm.processor, lm.arch, load_train_samples(str(sqa)), [torch.arange(3, 19)], 2, 0, parse_mix("1:1"), 0
    )
    loss, parts = batch_loss(lm.model, collate(sampler.examples(0), 0))
    assert set(parts) == {"multimodal", "text"}
    loss.backward()
    with_grad = {n for n, p in lm.model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in lm.model.named_parameters() if p.requires_grad}
    assert with_grad and all(n.endswith(".scale") or "multi_modal_projector" in n for n in with_grad)
    assert sum(n.endswith(".scale") for n in with_grad) == 14
    assert not any(n.endswith(".weight") and "layers" in n for n in with_grad)


@pytest.mark.parametrize("method", ["qslaw", "fp"])
def test_fast_step_gives_the_plain_steps_losses(llava_dir, calibrated, sqa, method):
    """Kept weights + fused AdamW (the default on the CPU) vs rebuilt weights + per-tensor AdamW: the
    same losses, step after step, on the same batches."""
    from qslaw_pipe.pipeline.data.sets import load_train_samples
    from qslaw_pipe.stages.tune.batches import StepSampler
    from qslaw_pipe.stages.tune.config import parse_mix

    cfg = _cfg(sqa, method=method, lm_lr=1e-2 if method == "qslaw" else 1e-3)
    calib = read_artifact(calibrated, "calibrate") if method == "qslaw" else None
    losses = {}
    for fast in (False, True):
        torch.manual_seed(0)
        lm = build_method_model(llava_dir, method, calib, compiled=True, keep=fast)
        sampler = StepSampler(
            lm.processor,
            lm.arch,
            load_train_samples(str(sqa)),
            [torch.arange(3, 19)],
            2,
            0,
            parse_mix("1:1"),
            0,
        )
        opt, _ = loop.optimizer(lm.model, cfg, fused=fast)
        lm.model.train()
        losses[fast] = [
            loop.train_step(lm.model, opt, collate(sampler.examples(s), 0))[0].item() for s in range(4)
        ]
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
    assert losses[True][0] != losses[True][-1]  # the steps did train


def test_warmup_schedule_draws_the_right_modality():
    assert [modalities(s, 4, 3, (1, 1)) for s in (0, 2)] == [["multimodal"] * 4] * 2
    assert modalities(3, 4, 3, (1, 1)) == ["multimodal"] * 2 + ["text"] * 2
    assert modalities(3, 4, 0, (1, 0)) == ["multimodal"] * 4
    assert modalities(0, 4, 0, (1, 3)) == ["multimodal"] + ["text"] * 3


def test_tune_writes_artifact_and_schedule(tmp_path, llava_dir, calibrated, sqa, corpus):
    run = _copy_calibration(calibrated, tmp_path / "r")
    res = tn.run(_cfg(sqa), run, llava_dir, corpus, bar=False)
    out = res.artifact.path
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["modality"] for r in rows] == ["multimodal"] * 2 + ["mixed"] * 4
    assert {"step", "loss", "modality", "lr", "seconds"} <= set(rows[0])
    assert (out / "loss.png").stat().st_size > 1000
    tensors, header = load_tensors(out / "trainable.safetensors")
    scales = [t for n, t in tensors.items() if n.endswith(".scale")]
    assert header["method"] == "qslaw" and len(scales) == 14
    assert any(not torch.all(s == 1) for s in scales)  # the scales moved
    assert not (out / "checkpoint.safetensors").exists()


def test_interrupted_tune_resumes_to_identical_curve_and_tensors(
    tmp_path, llava_dir, calibrated, sqa, corpus, monkeypatch
):
    cfg = _cfg(sqa)
    whole = tn.run(
        cfg, _copy_calibration(calibrated, tmp_path / "whole"), llava_dir, corpus, bar=False
    ).artifact.path
    run = _copy_calibration(calibrated, tmp_path / "cut")
    real = loop.save_checkpoint

    def dies_after_saving(path, model, opt, sched, step, rows, **kw):  # a crash right after step 4 is saved
        real(path, model, opt, sched, step, rows, **kw)
        if step >= 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", dies_after_saving)
    with pytest.raises(KeyboardInterrupt):
        tn.run(cfg, run, llava_dir, corpus, bar=False)
    monkeypatch.undo()
    assert not (run / "tune").exists() and (run / ".tune.partial" / "checkpoint.safetensors").is_file()
    resumed = tn.run(cfg, run, llava_dir, corpus, bar=False)
    assert resumed.resumed
    a = list(csv.DictReader((whole / "metrics.csv").open()))
    b = list(csv.DictReader((resumed.artifact.path / "metrics.csv").open()))
    assert [(r["step"], r["loss"], r["modality"], r["lr"]) for r in a] == [
        (r["step"], r["loss"], r["modality"], r["lr"]) for r in b
    ]
    ta, _ = load_tensors(whole / "trainable.safetensors")
    tb, _ = load_tensors(resumed.artifact.path / "trainable.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize(
    "method, expect", [("fp", "layers.0.self_attn.q_proj.weight"), ("qlora", "lora_A"), ("frozen", None)]
)
def test_baselines_train_what_they_should(tmp_path, llava_dir, calibrated, sqa, corpus, method, expect):
    run = _copy_calibration(calibrated, tmp_path / "r")
    res = tn.run(_cfg(sqa, method=method, steps=2), run, llava_dir, corpus, bar=False)
    tensors, _ = load_tensors(res.artifact.path / "trainable.safetensors")
    assert any("multi_modal_projector" in n for n in tensors)
    if expect:
        assert any(expect in n for n in tensors)
    else:
        assert all("multi_modal_projector" in n for n in tensors)


def test_tune_without_calibration_is_one_line_error(tmp_path, llava_dir, sqa, corpus):
    res = CliRunner().invoke(
        main,
        [
            "tune",
            "--run-dir",
            str(tmp_path / "r"),
            "--model",
            str(llava_dir),
            "--data",
            str(sqa),
            "--text",
            str(corpus),
        ],
    )
    assert (
        res.exit_code == 2
        and "calibrate/manifest.json not found" in res.output
        and "Traceback" not in res.output
    )


def test_parse_letter_and_score_on_known_answers():
    assert [
        parse_letter(o, ("x", "y", "z")) for o in ("B", " (C) z", "The answer is A.", "y", "D", "maybe")
    ] == ["B", "C", "A", "B", None, None]
    samples = [
        Sample(None, "q", t, ("x", "y"), {"grade": g}) for t, g in (("A", "1"), ("B", "1"), ("A", "2"))
    ]
    s = score(samples, ["A", "A", "no idea"])
    assert s["accuracy"] == pytest.approx(1 / 3) and s["unparsed"] == 1
    assert s["categories"]["grade"] == {"1": {"accuracy": 0.5, "n": 2}, "2": {"accuracy": 0.0, "n": 1}}


def test_eval_mcq_cli_side_by_side(tmp_path, llava_dir, calibrated, sqa, corpus):
    runs = []
    for method in ("qslaw", "frozen"):
        run = _copy_calibration(calibrated, tmp_path / method)
        tn.run(_cfg(sqa, method=method, steps=2), run, llava_dir, corpus, bar=False)
        runs.append(run)
    args = [
        "eval",
        "mcq",
        "--run-dir",
        str(runs[0]),
        "--baseline",
        str(runs[1]),
        "--data",
        str(sqa),
        "--limit",
        "0",
        "--batch-size",
        "4",
    ]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    for run in runs:
        m = metrics[str(run)]
        preds = [json.loads(line) for line in (run / "eval-mcq" / "predictions.jsonl").open()]
        assert m["n"] == len(preds) == 6
        hits = [parse_letter(p["output"], ("red", "blue", "green")) == p["target"] for p in preds]
        assert m["accuracy"] == pytest.approx(sum(hits) / 6)
        assert set(m["categories"]) == {"subject", "context", "grade"}
    human = CliRunner().invoke(main, args)
    assert (
        "qslaw (qslaw)" in human.stdout
        and "frozen (frozen)" in human.stdout
        and "grade=grade1" in human.stdout
    )
