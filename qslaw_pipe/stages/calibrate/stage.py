"""Stage `calibrate`: int-k qparams (delta, zero point per group) for the LM's targeted Linears.

omniquant: learnable clipping, block-wise reconstruction (omniquant.py); qvlm: the same on blocks of
consecutive layers chosen by activation entropy, with entropy.png (qvlm.py); rtn: min-max round-to-nearest,
in the same artifact format: `R/calibrate/qparams.safetensors` (pipeline/qparams.py) and targets.json.
Under torchrun (`calibrate --nproc N`) the calibration samples are split over the ranks (omniquant.py) and
rank 0 writes the artifact.
"""

import dataclasses
import json
import shutil
import time
from pathlib import Path

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.quant import rtn_qparams
from qslaw_pipe.pipeline import distributed
from qslaw_pipe.pipeline.artifact import StageResult, identity, run_stage
from qslaw_pipe.pipeline.config import config_to_dict
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import write_qparams
from qslaw_pipe.pipeline.targeting import parse_rule, quantized_names, resolve_targets
from qslaw_pipe.stages.calibrate.config import CalibrateConfig, layer_group_size
from qslaw_pipe.stages.calibrate.omniquant import omniquant
from qslaw_pipe.stages.calibrate.plot import plot_entropy
from qslaw_pipe.stages.calibrate.qvlm import qvlm


def calibrate(model_dir: Path, text_path: Path, cfg: CalibrateConfig, out: Path, bar: bool = True) -> dict:
    """Compute qparams for every targeted Linear and write `out/qparams.safetensors`; returns metrics."""
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
    tensors, losses, extra = {}, [], {}
    if cfg.method == "rtn":
        for t in targets:
            tensors[f"{t}.delta"], tensors[f"{t}.zero_point"] = rtn_qparams(
                named[t].weight.detach(), cfg.bits, group_sizes[t]
            )
    else:
        if cfg.method == "qvlm":
            results, losses, info = qvlm(lm, targets, cfg, text_path, out / "resume", bar, compute)
            extra = {"entropies": info["entropies"], "partition": info["spans"]}
            if distributed.is_main():
                plot_entropy(info["entropies"], info["spans"], losses, out / "entropy.png")
        else:
            results, losses = omniquant(lm, targets, cfg, text_path, out / "resume", bar, compute)
        for t, (d, z, up, lo) in results.items():
            tensors.update(
                {f"{t}.delta": d, f"{t}.zero_point": z, f"{t}.lwc_upper": up, f"{t}.lwc_lower": lo}
            )
    if distributed.is_main():
        write_qparams(out, tensors, cfg.bits, group_sizes, cfg.method)
        (out / "targets.json").write_text(json.dumps(decisions, indent=1))
        if (out / "resume").exists():
            shutil.rmtree(out / "resume")
    return {
        "layers": len(targets),
        "blocks": losses,
        "calibration_s": round(time.perf_counter() - start, 2),
        **compute.record(),
        "peak_gpu_mb": compute.peak_memory_mb(),
        "world_size": distributed.world(),
        **extra,
    }


def run(
    cfg: CalibrateConfig, run_dir: Path, model_dir: Path, text_path: Path, force=False, bar=True
) -> StageResult:
    """R/calibrate/ from the model at `model_dir` and the text corpus (reused, refused or resumed
    under the run-directory contract); `bar` shows progress bars. Under torchrun every rank calibrates its
    share of the samples; rank 0 returns the StageResult, the others None."""
    inputs = {"model": model_dir, "text": text_path}
    distributed.init(resolve(cfg.device, cfg.dtype).device)
    if cfg.method == "omniquant" and cfg.nsamples < distributed.world():
        raise QslawError(
            f"--nsamples {cfg.nsamples} is smaller than the {distributed.world()} ranks",
            "use at least one calibration sample per process",
        )
    return distributed.run_ranked(
        lambda work: run_stage(run_dir, "calibrate", config_to_dict(cfg), inputs, work, force=force),
        lambda out, _resuming: calibrate(model_dir, text_path, cfg, out, bar and distributed.is_main()),
    )
