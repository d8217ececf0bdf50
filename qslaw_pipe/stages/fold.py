"""Stage `fold`: exact folding of the learned scales into int-k codes, packed two per byte.

codes = clamp(round((W / delta) / s) + zp, 0, 2^k - 1) with the same ops as tuning's forward
(kernels/qslaw.py), so dequantizing the codes gives the tuned fake-quant weights bit for bit; the
stage checks this for every layer. Without a tune artifact it folds the calibration alone (s = 1).
Output: `R/fold/` in the layout of pipeline/folded.py.
"""

import shutil
from dataclasses import dataclass
from pathlib import Path

import click
import torch

from qslaw_pipe.cli_common import (
    emit,
    force_option,
    json_option,
    quiet_libraries,
    run_dir_option,
    user_errors,
)
from qslaw_pipe.kernels.pack import pack_int4
from qslaw_pipe.kernels.qslaw import scaled_codes
from qslaw_pipe.kernels.quant import dequantize_codes, from_groups
from qslaw_pipe.pipeline.artifact import StageResult, read_artifact, run_stage, stage_dir
from qslaw_pipe.pipeline.errors import QslawError
from qslaw_pipe.pipeline.folded import FOLDED_FILE, LAYOUT_VERSION
from qslaw_pipe.pipeline.model import load_model
from qslaw_pipe.pipeline.qparams import load_qparams
from qslaw_pipe.pipeline.qslaw_linear import QslawLinear, attach_qslaw
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors
from qslaw_pipe.pipeline.tune_methods import QUANTIZED, load_trainable
from qslaw_pipe.pipeline.tuned_model import TRAINABLE_FILE


@dataclass(frozen=True)
class FoldConfig:
    """source: 'auto' folds R/tune when present, else R/calibrate; 'calibrate' ignores R/tune."""

    source: str = "auto"

    def __post_init__(self):
        if self.source not in ("auto", "calibrate"):
            raise QslawError(f"invalid --source {self.source}", "use auto or calibrate")


def layer_codes(m: QslawLinear) -> torch.Tensor:
    """uint8 codes [out, in] of a QslawLinear under its scales."""
    q, _ = scaled_codes(m.w_over_delta, m.scale, m.zp, m.bits)
    return from_groups(q + m.zp.unsqueeze(-1), m.in_features).to(torch.uint8)


def fold_layer(name: str, m: QslawLinear) -> dict[str, torch.Tensor]:
    codes = layer_codes(m)
    with torch.no_grad():
        exact = torch.equal(
            dequantize_codes(codes, m.delta, m.zp.to(torch.uint8), m.group_size), m.quantized_weight()
        )
    if not exact:
        raise QslawError(f"folding {name} is not exact", "report this as a bug")
    out = {
        f"{name}.qweight": pack_int4(codes) if m.bits <= 4 else codes,
        f"{name}.delta": m.delta.clone(),
        f"{name}.zero_point": m.zp.to(torch.uint8),
    }
    if m.bias is not None:
        out[f"{name}.bias"] = m.bias.clone()
    return out


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
    model_dir = Path(calib.manifest["inputs"]["model"]["path"])
    lm = load_model(model_dir)
    qparams = load_qparams(calib)
    layers = attach_qslaw(lm.model, qparams, trainable=tune is not None)
    if tune is not None:
        load_trainable(lm.model, load_tensors(tune.path / TRAINABLE_FILE)[0])
    tensors, tied = other_tensors(lm.model, set(layers))
    for name, m in layers.items():
        tensors.update(fold_layer(name, m))
    bits = next(iter(qparams.values())).bits
    header = {
        "layout_version": LAYOUT_VERSION,
        "bits": bits,
        "packing": "int4" if bits <= 4 else "uint8",
        "group_sizes": {n: m.group_size for n, m in layers.items()},
        "shapes": {n: [m.out_features, m.in_features] for n, m in layers.items()},
        "tied": tied,
        "source": "tune" if tune else "calibrate",
        "method": tune.config["method"] if tune else calib.config["method"],
    }
    save_tensors(out / FOLDED_FILE, tensors, header)
    for f in model_dir.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "manifest.json":
            shutil.copy2(f, out / f.name)
    return {**header_summary(tensors, header), "source": header["source"], "method": header["method"]}


def header_summary(tensors: dict, header: dict) -> dict:
    """Bytes of the quantized Linears vs the same Linears in fp16, and of the whole artifact."""
    quant = sum(
        t.numel() * t.element_size()
        for k, t in tensors.items()
        if k.endswith((".qweight", ".delta", ".zero_point")) and k.rsplit(".", 1)[0] in header["shapes"]
    )
    fp16 = sum(2 * o * i for o, i in header["shapes"].values())
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    return {
        "layers": len(header["shapes"]),
        "quantized_bytes": quant,
        "quantized_fp16_bytes": fp16,
        "quantized_ratio": quant / fp16,
        "artifact_tensor_bytes": total,
    }


def run(cfg: FoldConfig, run_dir: Path, force: bool = False) -> StageResult:
    calib = read_artifact(run_dir, "calibrate")
    inputs = {"calibrate": calib.path, "model": Path(calib.manifest["inputs"]["model"]["path"])}
    if cfg.source == "auto" and (stage_dir(run_dir, "tune") / "manifest.json").is_file():
        inputs["tune"] = stage_dir(run_dir, "tune")
    return run_stage(
        run_dir,
        "fold",
        {"source": cfg.source, "layout_version": LAYOUT_VERSION},
        inputs,
        lambda out, _r: fold(run_dir, cfg, out),
        force=force,
    )


@click.command("fold")
@run_dir_option
@click.option(
    "--source",
    type=click.Choice(["auto", "calibrate"]),
    default="auto",
    show_default=True,
    help="auto: the tuned scales when RUN_DIR/tune exists, else the calibration alone (s = 1).",
)
@force_option
@json_option
@user_errors
def command(run_dir, source, force, as_json) -> None:
    """Fold scales into packed int-k codes + delta + zero point -> RUN_DIR/fold/ (exact)."""
    quiet_libraries()
    result = run(FoldConfig(source), run_dir, force)
    m = result.artifact.metrics
    human = (
        f"{'reused' if result.reused else 'wrote'} {result.artifact.path} ({m['layers']} layers from {m['source']}, {m['method']})\n"
        f"  quantized Linears: {m['quantized_bytes'] / 2**20:.1f} MiB vs {m['quantized_fp16_bytes'] / 2**20:.1f} MiB in fp16 "
        f"({m['quantized_ratio']:.3f}x); whole artifact {m['artifact_tensor_bytes'] / 2**20:.1f} MiB"
    )
    emit({"artifact": str(result.artifact.path), "reused": result.reused, **m}, as_json, human)
