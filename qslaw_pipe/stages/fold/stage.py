"""Stage `fold`: exact folding of the learned scales into int-k codes, packed two per byte.

codes = clamp(round((W / delta) / s) + zp, 0, 2^k - 1) with the same ops as tuning's forward
(kernels/qslaw.py), so dequantizing the codes gives the tuned fake-quant weights bit for bit; the
stage checks this for every layer. Without a tune artifact it folds the calibration alone (s = 1).
Output: `R/fold/` in the layout of pipeline/folded.py.
"""

from pathlib import Path

import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.qslaw import dequant_scaled, scaled_codes
from qslaw_pipe.kernels.quant import from_groups, to_groups
from qslaw_pipe.pipeline.artifact import StageResult, read_artifact, run_stage, stage_dir
from qslaw_pipe.pipeline.config import config_to_dict
from qslaw_pipe.pipeline.device import resolve
from qslaw_pipe.pipeline.folded import LAYOUT_VERSION, FoldedLayer, FoldedModel, write_folded
from qslaw_pipe.pipeline.methods import method
from qslaw_pipe.pipeline.model import copy_model_files, load_model, recorded_model
from qslaw_pipe.pipeline.qparams import LayerQParams, load_calibrated
from qslaw_pipe.pipeline.tuned import load_parameters, read_tuned
from qslaw_pipe.stages.fold.config import FoldConfig


def fold_layer(
    name: str,
    linear: torch.nn.Linear,
    q: LayerQParams,
    scale: torch.Tensor | None,
    dtype=torch.float32,
    device: torch.device | str = "cpu",
) -> FoldedLayer:
    """The int-k codes of `linear` (its weight in `dtype`, as tuned) under scales `scale` (None: s = 1),
    computed on `device`, checked to dequantize to the tuned fake-quant weight bit for bit."""
    w_groups = to_groups(linear.weight.detach().to(device, dtype), q.group_size)
    delta, zp = q.delta.float().to(device), q.zero_point.float().to(device)
    s = torch.ones_like(delta) if scale is None else scale.float().to(device)
    with torch.no_grad():
        centred, _ = scaled_codes(w_groups, s, delta, zp, q.bits)
        codes = from_groups(centred + zp.unsqueeze(-1), linear.in_features).to(torch.uint8)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        tuned = dequant_scaled(w_groups, s, delta, zp, q.bits, linear.in_features).cpu()
        layer = FoldedLayer(codes.cpu(), delta.cpu(), zp.to(torch.uint8).cpu(), q.group_size, q.bits, bias)
    if not torch.equal(layer.dequantized(), tuned):
        raise QslawError(f"folding {name} is not exact", "report this as a bug")
    return layer


def other_tensors(model: torch.nn.Module, quantized: set[str]) -> tuple[dict, dict]:
    """Unquantized tensors by state-dict name, each storage once; ({name: tensor}, {tied name: source})."""
    tensors, tied, seen = {}, {}, {}
    for key, t in model.state_dict().items():
        owner = key.rsplit(".", 1)[0]
        if owner in quantized:
            continue
        if t.data_ptr() in seen:
            tied[key] = seen[t.data_ptr()]
            continue
        seen[t.data_ptr()] = key
        tensors[key] = t.detach().clone()
    return tensors, tied


def _tuned_scales(tune) -> None:
    """Refuse a tune artifact whose method has no int-k scales to fold."""
    if tune is not None and not method(tune.config["method"]).quantized:
        raise QslawError(
            f"{tune.path} was tuned with --method {tune.config['method']}, which has no int-k scales to fold",
            "fold a qslaw or frozen run, or pass --source calibrate",
        )


def fold(cfg: FoldConfig, out: Path, upstream: dict) -> dict:
    """Fold R/calibrate (and R/tune, when it is an input) from `upstream`, the verified artifacts."""
    calib, tune = upstream["calibrate"], upstream.get("tune")
    _tuned_scales(tune)
    model_dir = recorded_model(calib)
    lm = load_model(model_dir)
    calibration = load_calibrated(calib)
    calibration.apply(lm.model)  # a calibrator's adjusted weights, if any: what its codes round from
    qparams = calibration.layers
    tuned = read_tuned(tune) if tune is not None else None
    if tuned is not None:  # the tuned projector (and anything else trained besides the scales)
        load_parameters(lm.model, tuned.without_scales(qparams))
    dtype = tuned.weight_dtype if tuned else torch.float32
    device = resolve(cfg.device, "fp32").device
    layers = {
        name: fold_layer(
            name, lm.model.get_submodule(name), q, tuned.scale(name) if tuned else None, dtype, device
        )
        for name, q in qparams.items()
    }
    tensors, tied = other_tensors(lm.model, set(layers))
    made_by = tune.config["method"] if tune else calib.config["method"]
    bits = next(iter(qparams.values())).bits
    folded = FoldedModel(layers, tensors, tied, bits, "tune" if tune else "calibrate", made_by)
    write_folded(out, folded)
    copy_model_files(model_dir, out)
    return {**folded.summary(), "source": folded.source, "method": made_by}


def run(cfg: FoldConfig, run_dir: Path, force: bool = False) -> StageResult:
    calib = read_artifact(run_dir, "calibrate", command="qslaw-pipe calibrate --run-dir {run_dir}")
    inputs = {"calibrate": calib.path, "model": recorded_model(calib)}
    if cfg.source == "auto" and (stage_dir(run_dir, "tune") / "manifest.json").is_file():
        inputs["tune"] = stage_dir(run_dir, "tune")
    config = {**config_to_dict(cfg), "layout_version": LAYOUT_VERSION}
    return run_stage(
        run_dir,
        "fold",
        config,
        inputs,
        lambda out, _resuming, upstream: fold(cfg, out, upstream),
        identity={k: v for k, v in config.items() if k not in FoldConfig.PLACEMENT},
        command="qslaw-pipe fold --run-dir {run_dir}",
        force=force,
    )
