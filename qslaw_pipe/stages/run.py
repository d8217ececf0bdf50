"""`qslaw-pipe run`: the main job on the embedded default, stage after stage into one run directory.

prepare -> calibrate (OmniQuant W4 g128) -> tune (QSLAW, easy-VQA + WikiText) -> fold (packed int4)
-> export onnx (MatMulNBits) -> eval mcq in onnxruntime (easy-VQA test) -> an answer about one test
image, in onnxruntime. Every stage reuses its finished
artifact and resumes a crashed one, so an interrupted run picks up where it stopped.
"""

from pathlib import Path

import click

from qslaw_pipe.cli_common import emit, json_option, quiet_libraries, user_errors
from qslaw_pipe.exports.ort_runtime import OrtVlm
from qslaw_pipe.pipeline.data.text import default_text_path
from qslaw_pipe.pipeline.train_sets import load_samples
from qslaw_pipe.stages import calibrate, eval_mcq, export, fold, prepare, tune
from qslaw_pipe.stages.generate import open_image


def demo_sample(data: str):
    return next(s for s in load_samples(data, "test") if s.image is not None)


def _step(i: int, name: str, text: str) -> None:
    click.echo(f"[{i}/7] {name:<9} -> {text}", err=True)


@click.command("run")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/default"), show_default=True)
@click.option("--bits", type=click.Choice(["2", "3", "4"]), default="4", show_default=True)
@click.option("--epochs", type=int, default=2, show_default=True, help="OmniQuant epochs per block.")
@click.option("--nsamples", type=int, default=32, show_default=True, help="OmniQuant calibration sequences.")
@click.option("--steps", type=int, default=60, show_default=True, help="QSLAW tuning steps.")
@click.option("--seqlen", type=int, default=256, show_default=True, help="Tokens per calibration sequence.")
@click.option("--limit", type=int, default=200, show_default=True, help="Test questions scored (0 = all).")
@click.option("--data", default="easyvqa", show_default=True, help="easyvqa, or a ScienceQA directory.")
@click.option(
    "--model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A local LLaVA-style model directory instead of the embedded default.",
)
@click.option(
    "--text",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Raw text corpus. Default: WikiText-2 test ($QSLAW_TEXT).",
)
@json_option
@user_errors
def command(run_dir, bits, epochs, nsamples, steps, seqlen, limit, data, model, text, as_json) -> None:
    """Run the whole pipeline on the default VLM into RUN_DIR (resumable: finished stages are reused).

    Every stage reuses a finished artifact; each can also be run alone (see `qslaw-pipe --help`).
    """
    quiet_libraries()
    model = model or prepare.run(prepare.PrepareConfig()).artifact.path
    _step(1, "prepare", str(model))
    text = text or default_text_path()
    cal_cfg = calibrate.CalibrateConfig(bits=int(bits), epochs=epochs, nsamples=nsamples, seqlen=seqlen)
    cal = calibrate.run(cal_cfg, run_dir, model, text)
    _step(2, "calibrate", f"{cal.artifact.path}{' (reused)' if cal.reused else ''}")
    tuned = tune.run(
        tune.TuneConfig(data=data, steps=steps, warmup_steps=max(1, steps // 4)), run_dir, model, text
    )
    m = tuned.artifact.metrics
    _step(
        3, "tune", f"{tuned.artifact.path} (final loss {m['final_loss']:.3f}, {m['mean_step_s']:.1f} s/step)"
    )
    folded = fold.run(fold.FoldConfig(), run_dir).artifact
    _step(
        4, "fold", f"{folded.path} (int4 Linears {folded.metrics['quantized_ratio']:.2f}x their fp16 bytes)"
    )
    onnx = export.run(export.ExportConfig(), run_dir).artifact
    _step(5, "export", f"{onnx.path} (MatMulNBits int4, onnxruntime)")
    mcq_cfg = eval_mcq.McqConfig(data=data, limit=limit, onnx=onnx.path.name)
    mcq = eval_mcq.run_mcq(mcq_cfg, run_dir).artifact.metrics
    _step(
        6, "eval mcq", f"accuracy {100 * mcq['accuracy']:.1f}% on {mcq['n']} test questions, in onnxruntime"
    )
    sample = demo_sample(data)
    answer = OrtVlm(onnx.path).generate(sample.prompt, open_image(sample.image), max_new_tokens=8)
    _step(7, "generate", "answer about a test image, in onnxruntime")
    result = {
        "model": str(model),
        "run_dir": str(run_dir),
        "accuracy": mcq["accuracy"],
        "n": mcq["n"],
        "fold": folded.metrics,
        "demo": {"prompt": sample.prompt, "target": sample.target, "answer": answer},
    }
    human = (
        f"easy-VQA multiple choice: {100 * mcq['accuracy']:.1f}% of {mcq['n']} test questions "
        f"(QSLAW W{bits} int4 in onnxruntime; per category: `qslaw-pipe eval mcq --run-dir {run_dir} --onnx {onnx.path.name}`)\n"
        f"demo question: {sample.prompt.splitlines()[0]} (answer {sample.target})\nmodel answer: {answer}"
    )
    emit(result, as_json, human)
