"""`qslaw-pipe eval ppl`: held-out WikiText perplexity, full precision vs the calibrated fake-quant model.
`--act-bits 8` also fake-quantizes every quantized Linear's input per token (W4A8-style settings, simulated)."""

import copy
from pathlib import Path

from qslaw_pipe.pipeline.artifact import StageResult, read_artifact, run_stage, stage_dir
from qslaw_pipe.pipeline.data.text import read_text, split_text, token_chunks
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import apply_fake_quant, load_calibrated, quantize_inputs
from qslaw_pipe.stages.evaluate.config import PplConfig
from qslaw_pipe.stages.evaluate.perplexity import perplexity


def evaluate_ppl(model_dir: Path, calib, text_path: Path, cfg: PplConfig) -> dict:
    """FP and fake-quant perplexity on the held-out half, first `windows` non-overlapping windows, for the
    (verified) calibrate artifact `calib`. Fake quantization is computed in fp32 on the CPU; each model then
    computes on --device / --dtype."""
    compute = resolve(cfg.device, cfg.dtype)
    lm = load_model(model_dir)
    windows = token_chunks(lm.tokenizer, split_text(read_text(text_path), "eval"), cfg.seqlen, cfg.windows)
    calibration = load_calibrated(calib)
    qparams = calibration.layers
    quant = apply_fake_quant(calibration.apply(copy.deepcopy(lm.model)), qparams)
    if cfg.act_bits < 16:
        quantize_inputs(quant, sorted(qparams), cfg.act_bits)
    fp = perplexity(lm.model.to(compute.device, compute.dtype), windows, cfg.batch_size, "fp", compute)
    del lm
    q = perplexity(quant.to(compute.device, compute.dtype), windows, cfg.batch_size, "quantized", compute)
    c = calib.config
    return {
        "fp": fp,
        "quantized": q,
        "windows": len(windows),
        "seqlen": cfg.seqlen,
        "split": "eval (second half)",
        "quantizer": f"{c['method']} W{c['bits']}"
        + (f"A{cfg.act_bits}" if cfg.act_bits < 16 else "")
        + f" g{c['group_size']}",
        **compute.record(),
    }


def run_ppl(
    cfg: PplConfig, run_dir: Path, model_dir: Path, text_path: Path, force: bool = False
) -> StageResult:
    inputs = {"model": model_dir, "text": text_path, "calibrate": stage_dir(run_dir, "calibrate")}
    if not (inputs["calibrate"] / "manifest.json").is_file():  # the one-line error naming what to run
        read_artifact(run_dir, "calibrate", command="qslaw-pipe calibrate --run-dir {run_dir}")
    return run_stage(
        run_dir,
        "eval-ppl",
        cfg,
        inputs,
        lambda _out, _resuming, upstream: evaluate_ppl(model_dir, upstream["calibrate"], text_path, cfg),
        command="qslaw-pipe eval ppl --run-dir {run_dir}",
        force=force,
    )
