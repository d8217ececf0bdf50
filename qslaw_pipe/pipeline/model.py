"""Loading a local Hugging Face directory: a LLaVA-style model or a plain causal LM, with its processor."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from qslaw_pipe.errors import QslawError
from qslaw_pipe.paths import default_model_dir


@dataclass
class LoadedModel:
    """model: the transformers module; processor: LlavaProcessor (multimodal) or tokenizer; path: its dir."""

    model: torch.nn.Module
    processor: object
    path: Path

    @property
    def multimodal(self) -> bool:
        return getattr(self.model.config, "vision_config", None) is not None

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
    """Load the directory at `path` in eval mode, its weights in `dtype` on `device`."""
    path = Path(path)
    config = _read_config(path)
    try:
        model, processor = _load(path, config, dtype)
    except (OSError, ValueError, SafetensorError) as e:
        raise QslawError(
            f"cannot load the model in {path} ({str(e).splitlines()[0][:160]})",
            "pass a complete Hugging Face model directory",
        ) from e
    return LoadedModel(model.to(device).eval(), processor, path)


def _load(path: Path, config: dict, dtype: torch.dtype):
    if "vision_config" in config:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, trust_remote_code=False)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
        processor = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    return model, processor


def resolve_model(model: Path | None) -> Path:
    """`--model` as given, else the default VLM built by `qslaw-pipe prepare`; refuses a non-model dir."""
    path = Path(model) if model else default_model_dir()
    if not (path / "config.json").is_file():
        hint = (
            "run `qslaw-pipe prepare` first" if model is None else "pass a local Hugging Face model directory"
        )
        raise QslawError(f"no model at {path}", hint)
    return path


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
    """The config, tokenizer and processor files of model directory `src` (not its weights or manifest)."""
    for f in Path(src).iterdir():  # symlinks are not followed: only the directory's own files travel
        if f.is_file() and not f.is_symlink() and f.suffix != ".safetensors" and f.name != "manifest.json":
            shutil.copy2(f, Path(dst) / f.name)
