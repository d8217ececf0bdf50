"""`qslaw-pipe run`: the main job on the embedded default, stage after stage into one run directory.

Today: prepare -> calibrate -> eval ppl -> an answer about an easy-VQA image. Every stage reuses its
finished artifact, so an interrupted run picks up where it stopped.
"""

from pathlib import Path

import click

from qslaw_pipe.cli_common import emit, json_option, quiet_libraries, user_errors
from qslaw_pipe.pipeline.data.text import default_text_path
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.stages import calibrate, evaluate, prepare
from qslaw_pipe.stages.generate import generate, open_image


def demo_sample():
    from qslaw_pipe.pipeline.data.easyvqa import load_easyvqa

    return load_easyvqa("test")[0]


@click.command("run")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/default"), show_default=True)
@click.option("--bits", type=click.Choice(["2", "3", "4", "8"]), default="4", show_default=True)
@click.option("--epochs", type=int, default=3, show_default=True, help="OmniQuant epochs per block.")
@click.option("--nsamples", type=int, default=32, show_default=True)
@click.option("--windows", type=int, default=32, show_default=True, help="Held-out perplexity windows.")
@json_option
@user_errors
def command(run_dir, bits, epochs, nsamples, windows, as_json) -> None:
    """Run the whole pipeline on the default VLM into RUN_DIR (resumable: finished stages are reused)."""
    quiet_libraries()
    model = prepare.run(prepare.PrepareConfig()).artifact.path
    click.echo(f"[1/4] prepare   -> {model}", err=True)
    text = default_text_path()
    cfg = calibrate.CalibrateConfig(bits=int(bits), epochs=epochs, nsamples=nsamples)
    cal = calibrate.run(cfg, run_dir, model, text)
    click.echo(f"[2/4] calibrate -> {cal.artifact.path}{' (reused)' if cal.reused else ''}", err=True)
    ppl = evaluate.run_ppl(evaluate.PplConfig(windows=windows), run_dir, model, text).artifact.metrics
    click.echo(f"[3/4] eval ppl  -> fp {ppl['fp']:.2f}, {ppl['quantizer']} {ppl['quantized']:.2f}", err=True)
    sample = demo_sample()
    answer = generate(load_model(model), sample.prompt, open_image(sample.image), max_new_tokens=16)
    click.echo(
        "[4/4] generate  -> answer about an easy-VQA test image (projector untrained until `tune`)", err=True
    )
    result = {
        "model": str(model),
        "run_dir": str(run_dir),
        "perplexity": ppl,
        "demo": {"prompt": sample.prompt, "answer": answer},
    }
    human = (
        f"perplexity (held-out WikiText): fp {ppl['fp']:.2f}  {ppl['quantizer']} {ppl['quantized']:.2f}\n"
        f"demo question: {sample.prompt.splitlines()[0]}\nanswer: {answer}"
    )
    emit(result, as_json, human)
