"""Stage `fold`: exact folding of the learned scales into int-k codes, packed two per byte.

codes = clamp(round((W / delta) / s) + zp, 0, 2^k - 1) with the same ops as tuning's forward
(kernels/qslaw.py), so dequantizing the codes gives the tuned fake-quant weights bit for bit; the
stage checks this for every layer. Without a tune artifact it folds the calibration alone (s = 1).
Output: `R/fold/` in the layout of pipeline/folded.py.
"""

from dataclasses import dataclass
from pathlib import Path

import click
import torch

from qslaw_pipe import cli_common as cli
from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.qslaw import dequant_scaled, scaled_codes
from qslaw_pipe.kernels.quant import from_groups, to_groups
from qslaw_pipe.pipeline.artifact import StageResult, read_artifact, run_stage, stage_dir
from qslaw_pipe.pipeline.config import merge_recipe
from qslaw_pipe.pipeline.device import check_device, resolve
from qslaw_pipe.pipeline.folded import LAYOUT_VERSION, FoldedLayer, FoldedModel, write_folded
from qslaw_pipe.pipeline.model import copy_model_files, load_model, recorded_model
from qslaw_pipe.pipeline.qparams import LayerQParams, load_qparams
from qslaw_pipe.pipeline.tuned import QUANTIZED, load_parameters, read_tuned

SOURCES = ("auto", "calibrate")


@dataclass(frozen=True)
class FoldConfig:
    """source: 'auto' folds R/tune when present, else R/calibrate; 'calibrate' ignores R/tune."""

    source: str = "auto"
    device: str = "auto"

    def __post_init__(self):
        check_device(self.device)
        if self.source not in SOURCES:
            raise QslawError(f"invalid --source {self.source}", "use auto or calibrate")


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


def _sources(run_dir: Path, cfg: FoldConfig):
    calib = read_artifact(run_dir, "calibrate")
    tune = None
    if cfg.source == "auto" and (stage_dir(run_dir, "tune") / "manifest.json").is_file():
        tune = read_artifact(run_dir, "tune")
        if tune.config["method"] not in QUANTIZED:
            raise QslawError(
                f"{tune.path} was tuned with --method {tune.config['method']}, which has no int-k scales to fold",
                "fold a qslaw or frozen run, or pass --source calibrate",
            )
    return calib, tune


def fold(run_dir: Path, cfg: FoldConfig, out: Path) -> dict:
    calib, tune = _sources(run_dir, cfg)
    model_dir = recorded_model(calib)
    lm = load_model(model_dir)
    qparams = load_qparams(calib)
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
    method = tune.config["method"] if tune else calib.config["method"]
    bits = next(iter(qparams.values())).bits
    folded = FoldedModel(layers, tensors, tied, bits, "tune" if tune else "calibrate", method)
    write_folded(out, folded)
    copy_model_files(model_dir, out)
    return {**folded.summary(), "source": folded.source, "method": method}


def run(cfg: FoldConfig, run_dir: Path, force: bool = False) -> StageResult:
    calib = read_artifact(run_dir, "calibrate")
    inputs = {"calibrate": calib.path, "model": recorded_model(calib)}
    if cfg.source == "auto" and (stage_dir(run_dir, "tune") / "manifest.json").is_file():
        inputs["tune"] = stage_dir(run_dir, "tune")
    return run_stage(
        run_dir,
        "fold",
        {"source": cfg.source, "device": cfg.device, "layout_version": LAYOUT_VERSION},
        inputs,
        lambda out, _r: fold(run_dir, cfg, out),
        force=force,
    )


@click.command("fold")
@cli.run_dir_option
@cli.field_option(
    FoldConfig,
    "source",
    "auto: the tuned scales when RUN_DIR/tune exists, else the calibration alone (s = 1).",
    type=click.Choice(SOURCES),
)
@cli.field_option(
    FoldConfig, "device", "Where to compute the codes: auto (CUDA when there is one), cpu, cuda, cuda:N."
)
@cli.stage_options
def command(run_dir, recipe, force, as_json, **flags) -> None:
    """Fold scales into packed int-k codes + delta + zero point -> RUN_DIR/fold/ (exact)."""
    cli.quiet_libraries()
    result = run(merge_recipe(FoldConfig, recipe, flags), run_dir, force)
    m = result.artifact.metrics
    mib = {k: m[k] / 2**20 for k in ("quantized_bytes", "quantized_fp16_bytes", "artifact_tensor_bytes")}
    details = (
        f"\n  quantized Linears: {mib['quantized_bytes']:.1f} MiB vs {mib['quantized_fp16_bytes']:.1f} MiB in fp16 "
        f"({m['quantized_ratio']:.3f}x); whole artifact {mib['artifact_tensor_bytes']:.1f} MiB"
    )
    cli.report(result, as_json, f"{m['layers']} layers from {m['source']}, {m['method']}", details)
