"""A finished `R/tune/` run as a plain PyTorch model for inference, from the artifacts alone: each tuning
method rebuilds its tuned form itself (pipeline/methods/: qslaw / frozen bake W_q(s), the values fold packs;
fp loads the tuned LM; qlora rebuilds NF4 + LoRA). The tuned projector is loaded in every case.
"""

from pathlib import Path

from qslaw_pipe.pipeline.artifact import Artifact, read_artifact
from qslaw_pipe.pipeline.device import Compute, resolve
from qslaw_pipe.pipeline.methods import method
from qslaw_pipe.pipeline.model import LoadedModel, load_model, recorded_model
from qslaw_pipe.pipeline.qparams import load_calibrated
from qslaw_pipe.pipeline.tuned import read_tuned


def load_tuned(
    run_dir: Path, compute: Compute | None = None, upstream: dict[str, Artifact] | None = None
) -> tuple[LoadedModel, Artifact]:
    """R/tune's model ready for inference on `compute` (default: CPU fp32), and its artifact: the base model,
    the calibrator's adjusted weights if any, and the tuned tensors put back by the method's own `restore`.
    Tuned weights are rebuilt in fp32 on the CPU, then moved and cast (QLoRA is rebuilt on the device, where
    bitsandbytes quantizes). `upstream`: the tune (and calibrate) artifacts a stage already verified; without
    it they are read from `run_dir`."""
    compute = compute or resolve("cpu", "fp32")
    upstream = upstream or {}
    tune = upstream.get("tune") or read_artifact(run_dir, "tune")
    model_dir = recorded_model(tune)
    lm = load_model(model_dir)
    tuned = read_tuned(tune)
    spec = method(tuned.method)
    calib = (upstream.get("calibrate") or read_artifact(run_dir, "calibrate")) if spec.quantized else None
    calibration = load_calibrated(calib) if calib is not None else None
    if calibration is not None:
        calibration.apply(lm.model)
    if spec.on_device:
        lm.model.to(compute.device)
    spec.impl().restore(lm.model, spec, tuned, calibration, tune.config, compute.dtype)
    lm.model.requires_grad_(False)
    if not spec.on_device:
        lm.model.to(compute.device, compute.dtype)
    return LoadedModel(lm.model.eval(), lm.processor, model_dir), tune
