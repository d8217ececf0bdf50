"""Stage `calibrate`: int-k qparams (delta, zero point per group) for the LM's targeted Linears, by the
calibrator --method names (calibrators.py: omniquant, qvlm, rtn, ...), in one artifact format:
`R/calibrate/qparams.safetensors` (pipeline/qparams.py, the Calibration record) and targets.json.
Under torchrun (`calibrate --nproc N`) the calibration samples are split over the ranks (omniquant.py) and
rank 0 writes the artifact.
"""

import dataclasses
import json
import shutil
import time
from pathlib import Path

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline import distributed
from qslaw_pipe.pipeline.artifact import StageResult, identity, run_stage
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import write_calibration
from qslaw_pipe.pipeline.targeting import parse_rule, quantized_names, resolve_targets
from qslaw_pipe.stages.calibrate.calibrators import calibrator
from qslaw_pipe.stages.calibrate.config import CalibrateConfig, layer_group_size

COMMAND = "qslaw-pipe calibrate --run-dir {run_dir}"


def calibrate(model_dir: Path, text_path: Path, cfg: CalibrateConfig, out: Path, bar: bool = True) -> dict:
    """Compute qparams for every targeted Linear with the configured calibrator (calibrators.py) and write
    `out/qparams.safetensors`; returns metrics."""
    start = time.perf_counter()
    compute = resolve(cfg.device, cfg.dtype)
    compute = dataclasses.replace(compute, device=distributed.init(compute.device))
    distributed.agree("model", identity(model_dir), "give every rank the same --model")
    lm = load_model(model_dir)
    decisions = resolve_targets(lm.model, [parse_rule(r) for r in cfg.rules])
    targets = quantized_names(decisions)
    if not targets:
        raise QslawError("the targeting rules select no Linear layer", "check --rule patterns")
    named = dict(lm.model.named_modules())
    group_sizes = {t: layer_group_size(cfg, named[t].in_features) for t in targets}
    impl = calibrator(cfg.method).impl()
    record, measured = impl.calibrate(lm, targets, group_sizes, cfg, text_path, out, bar, compute)
    if distributed.is_main():
        write_calibration(out, record)
        (out / "targets.json").write_text(json.dumps(decisions, indent=1))
        if (out / "resume").exists():
            shutil.rmtree(out / "resume")
    return {
        "layers": len(targets),
        "calibration_s": round(time.perf_counter() - start, 2),
        **compute.record(),
        "peak_gpu_mb": compute.peak_memory_mb(),
        "world_size": distributed.world(),
        **measured,
    }


def run(
    cfg: CalibrateConfig, run_dir: Path, model_dir: Path, text_path: Path, force=False, bar=True
) -> StageResult:
    """R/calibrate/ from the model at `model_dir` and the text corpus (reused, refused or resumed
    under the run-directory contract); `bar` shows progress bars. Under torchrun every rank calibrates its
    share of the samples; rank 0 returns the StageResult, the others None."""
    inputs = {"model": model_dir, "text": text_path}
    if cfg.from_checkpoint is not None:
        inputs["checkpoint"] = Path(cfg.from_checkpoint)
    distributed.init(resolve(cfg.device, cfg.dtype).device)
    if calibrator(cfg.method).samples and cfg.nsamples < distributed.world():
        raise QslawError(
            f"--nsamples {cfg.nsamples} is smaller than the {distributed.world()} ranks",
            "use at least one calibration sample per process",
        )
    return distributed.run_ranked(
        lambda work: run_stage(
            run_dir,
            "calibrate",
            cfg,
            inputs,
            work,
            command=COMMAND,
            force=force,
        ),
        lambda out, _resuming, _up: calibrate(model_dir, text_path, cfg, out, bar and distributed.is_main()),
    )
