"""`qslaw-pipe run`: the main job on the embedded default, stage after stage into one run directory.

prepare -> calibrate (OmniQuant W4 g128) -> tune (QSLAW, easy-VQA + WikiText) -> fold (packed int4)
-> export onnx (MatMulNBits) -> eval mcq in onnxruntime (easy-VQA test) -> an answer about one test
image, in onnxruntime. Every stage reuses its finished artifact and resumes a crashed one, so an
interrupted run picks up where it stopped. Its settings are a recipe (run.yaml beside this file).
"""

from dataclasses import dataclass, replace
from pathlib import Path

import click

from qslaw_pipe.cli_common import ShownDefault, emit, field_default, json_option, quiet_libraries, user_errors
from qslaw_pipe.errors import QslawError
from qslaw_pipe.paths import default_text_path
from qslaw_pipe.pipeline.config import config_from_mapping, load_recipe
from qslaw_pipe.stages import calibrate, export, fold, prepare, tune
from qslaw_pipe.stages.evaluate.config import McqConfig

RECIPE = Path(__file__).with_name("run.yaml")
SECTIONS = {  # the recipe's sections: the stage configs they build (export: by its format's exporter)
    "calibrate": calibrate.CalibrateConfig,
    "tune": tune.TuneConfig,
    "fold": fold.FoldConfig,
    "export": None,
    "mcq": McqConfig,
}


def _section(name: str, data: dict, source: str):
    if name == "export":
        return export.export_config(data, source)
    return config_from_mapping(SECTIONS[name], data, source)


# run's flags: (section, key) each sets; --data sets both the training and the test set
FLAGS = {
    "bits": [("calibrate", "bits")],
    "epochs": [("calibrate", "epochs")],
    "nsamples": [("calibrate", "nsamples")],
    "seqlen": [("calibrate", "seqlen")],
    "steps": [("tune", "steps")],
    "limit": [("mcq", "limit")],
    "data": [("tune", "data"), ("mcq", "data")],
    "device": [("calibrate", "device"), ("tune", "device"), ("fold", "device"), ("mcq", "device")],
}


@dataclass(frozen=True)
class RunConfig:
    """One config per stage the main job runs (export: its exporter's Config)."""

    calibrate: object
    tune: object
    fold: object
    export: object
    mcq: McqConfig


def run_config(recipe: Path | None, flags: dict) -> RunConfig:
    """The recipe (default: run.yaml) with the flags that were given applied; each section validated."""
    source = recipe or RECIPE
    sections = load_recipe(source)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise QslawError(f"unknown section(s) {', '.join(unknown)} in {source}", f"use {', '.join(SECTIONS)}")
    odd = [name for name in SECTIONS if not isinstance(sections.get(name) or {}, dict)]
    if odd:
        raise QslawError(
            f"section {odd[0]} in {source} is not a mapping of keys to values",
            f"write {odd[0]}: followed by indented key: value lines",
        )
    data = {name: dict(sections.get(name) or {}) for name in SECTIONS}
    for flag, value in flags.items():
        for section, key in FLAGS[flag] if value is not None else ():
            data[section][key] = value
    data["tune"].setdefault("warmup_steps", max(1, data["tune"].get("steps", tune.TuneConfig.steps) // 4))
    return RunConfig(**{n: _section(n, data[n], f"{source} [{n}]") for n in SECTIONS})


def recipe_value(flag: str) -> str:
    """What the packaged recipe sets for a run flag (shown as its default in --help)."""
    section, key = FLAGS[flag][0]
    return str((load_recipe(RECIPE).get(section) or {}).get(key, field_default(SECTIONS[section], key)))


def demo_sample(data: str):
    from qslaw_pipe.pipeline.data.sets import load_samples

    return next(s for s in load_samples(data, "test") if s.image is not None)


def _step(i: int, name: str, text: str) -> None:
    click.echo(f"[{i}/7] {name:<9} -> {text}", err=True)


def _flag(name: str, help: str, **kwargs):
    shown = f"{recipe_value(name)} (run.yaml)"
    return click.option(f"--{name}", cls=ShownDefault, shown=shown, default=None, help=help, **kwargs)


@click.command("run")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/default"), show_default=True)
@_flag("bits", "Weight bits (calibrate.bits).", type=click.Choice(["2", "3", "4"]))
@_flag("epochs", "OmniQuant epochs per block (calibrate.epochs).", type=int)
@_flag("nsamples", "OmniQuant calibration sequences (calibrate.nsamples).", type=int)
@_flag("seqlen", "Tokens per calibration sequence (calibrate.seqlen).", type=int)
@_flag(
    "steps", "QSLAW tuning steps (tune.steps; warmup a quarter of them unless the recipe sets it).", type=int
)
@_flag("limit", "Test questions scored, 0 = all (mcq.limit).", type=int)
@_flag("data", "easyvqa, or a ScienceQA directory (tune.data and mcq.data).")
@_flag("device", "auto (CUDA when there is one), cpu, cuda or cuda:N, for every stage that computes.")
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
@click.option(
    "--config",
    "recipe",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A recipe replacing the packaged run.yaml (sections calibrate, tune, fold, export, mcq).",
)
@json_option
@user_errors
def command(run_dir, model, text, recipe, as_json, **flags) -> None:
    """Run the whole pipeline on the default VLM into RUN_DIR (resumable: finished stages are reused).

    Every stage reuses a finished artifact; each can also be run alone (see `qslaw-pipe --help`).
    """
    quiet_libraries()
    from qslaw_pipe.exports.onnx.runtime import OrtVlm
    from qslaw_pipe.pipeline.data.images import open_image
    from qslaw_pipe.stages.evaluate import mcq as eval_mcq

    flags["bits"] = int(flags["bits"]) if flags["bits"] else None
    cfg = run_config(recipe, flags)
    eval_mcq.mcq_samples(
        cfg.mcq
    )  # a test set without multiple-choice questions fails now, not after five stages
    model = model or prepare.run(prepare.PrepareConfig()).artifact.path
    _step(1, "prepare", str(model))
    text = text or default_text_path()
    cal = calibrate.run(cfg.calibrate, run_dir, model, text)
    _step(2, "calibrate", f"{cal.artifact.path}{' (reused)' if cal.reused else ''}")
    tuned = tune.run(cfg.tune, run_dir, model, text)
    m = tuned.artifact.metrics
    _step(
        3, "tune", f"{tuned.artifact.path} (final loss {m['final_loss']:.3f}, {m['mean_step_s']:.1f} s/step)"
    )
    folded = fold.run(cfg.fold, run_dir).artifact
    _step(
        4, "fold", f"{folded.path} (int4 Linears {folded.metrics['quantized_ratio']:.2f}x their fp16 bytes)"
    )
    deployed = cfg.export.deployed(cfg.mcq.device)
    onnx = export.run(deployed, run_dir).artifact
    _step(5, "export", f"{onnx.path} ({deployed.int4_op} int4, {deployed.precision} decoder, onnxruntime)")
    mcq = eval_mcq.run_mcq(replace(cfg.mcq, onnx=str(onnx.path)), run_dir).artifact.metrics
    _step(
        6, "eval mcq", f"accuracy {100 * mcq['accuracy']:.1f}% on {mcq['n']} test questions, in onnxruntime"
    )
    sample = demo_sample(cfg.mcq.data)
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
        f"(QSLAW W{cfg.calibrate.bits} int4 in onnxruntime; per category: `qslaw-pipe eval mcq --run-dir {run_dir} "
        f"--onnx {onnx.path}`)\ndemo question: {sample.prompt.splitlines()[0]} (answer {sample.target})\n"
        f"model answer: {answer}"
    )
    emit(result, as_json, human)
