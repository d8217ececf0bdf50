"""Loading a local Hugging Face directory: a LLaVA-style model or a plain causal LM, with its processor."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoTokenizer

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.arch import Arch, arch_of
from qslaw_pipe.pipeline.arch.base import load_processor
from qslaw_pipe.pipeline.hashing import linked_files


@dataclass
class LoadedModel:
    """model: the transformers module; processor: its family's processor (multimodal) or tokenizer;
    path: its dir."""

    model: torch.nn.Module
    processor: object
    path: Path

    @property
    def arch(self) -> Arch:
        return arch_of(self.model.config)

    @property
    def multimodal(self) -> bool:
        return self.arch.multimodal

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)


def _read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise QslawError(
            f"{cfg} not found",
            "pass --model a local Hugging Face model directory (or run `qslaw-pipe prepare`)",
        )
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QslawError(
            f"{cfg} is not a JSON config ({type(e).__name__})", "pass a Hugging Face model directory"
        ) from e
    if not isinstance(config, dict) or "model_type" not in config:
        raise QslawError(f"{cfg} has no model_type", "pass a Hugging Face model directory")
    if "auto_map" in config:
        raise QslawError(
            f"{path} asks to run its own Python code (auto_map in config.json)",
            "qslaw-pipe never runs model code: use a model transformers implements",
        )
    return config


def load_model(
    path: Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LoadedModel:
    """Load the directory at `path` in eval mode, its weights in `dtype` on `device`; a fold artifact
    (`R/fold`) loads as the folded model (its codes dequantized)."""
    from qslaw_pipe.pipeline.folded import is_folded, load_folded_model

    path = Path(path)
    config = _read_config(path)
    if is_folded(path):
        lm = load_folded_model(path)
        return LoadedModel(lm.model.to(device, dtype).eval(), lm.processor, path)
    try:
        model, processor = _load(path, config, dtype)
    except (OSError, ValueError, SafetensorError) as e:
        raise QslawError(
            f"cannot load the model in {path} ({str(e).splitlines()[0][:160]})",
            "pass a complete Hugging Face model directory",
        ) from e
    return LoadedModel(model.to(device).eval(), processor, path)


def _load(path: Path, config: dict, dtype: torch.dtype):
    arch = arch_of(config)
    model, info = auto_class(arch).from_pretrained(
        path, dtype=dtype, trust_remote_code=False, output_loading_info=True
    )
    absent = [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]
    if absent:  # transformers would fill them with random values
        raise QslawError(
            f"the weights in {path} lack {len(absent)} of the model's tensors (e.g. {absent[0]})",
            "pass a complete Hugging Face model directory",
        )
    return model, load_model_processor(path, arch)


def auto_class(arch: Arch):
    """The transformers auto class that builds a model of `arch`'s family."""
    import transformers

    return getattr(transformers, arch.automodel)


def load_model_processor(path: Path, arch: Arch):
    """A multimodal family's processor (without any video processor), or a text LM's tokenizer."""
    if arch.multimodal:
        return load_processor(path)
    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)


def recorded_model(artifact) -> Path:
    """The model directory a finished artifact (calibrate, tune) was made from, where it is now (the
    default model in this machine's cache); a one-line error when it is gone."""
    path = artifact.input_path("model")
    if not (path / "config.json").is_file():
        fix = (
            "run `qslaw-pipe prepare` to rebuild it"
            if "in_cache" in artifact.manifest["inputs"]["model"]
            else "put the model back at that path"
        )
        raise QslawError(f"the model {artifact.path} was made from is gone from {path}", fix)
    return path


def copy_model_files(src: Path, dst: Path) -> None:
    """The config, tokenizer and processor files of model directory `src` (not its weights or manifest),
    symlinks followed within its tree (a hub-cache snapshot's links to its blobs), never out of it."""
    for name, f in linked_files(src):
        if "/" not in name and not name.endswith(".safetensors") and name != "manifest.json":
            shutil.copyfile(f, Path(dst) / name)
