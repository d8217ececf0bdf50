"""Loading a local Hugging Face directory: a LLaVA-style model or a plain causal LM, with its processor."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
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
    return json.loads(cfg.read_text())


def load_model(
    path: Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LoadedModel:
    """Load the directory at `path` in eval mode, its weights in `dtype` on `device`."""
    path = Path(path)
    config = _read_config(path)
    if "vision_config" in config:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        processor = AutoProcessor.from_pretrained(path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        processor = AutoTokenizer.from_pretrained(path)
    return LoadedModel(model.to(device).eval(), processor, path)


def resolve_model(model: Path | None) -> Path:
    """`--model` as given, else the default VLM built by `qslaw-pipe prepare`; refuses a non-model dir."""
    path = Path(model) if model else default_model_dir()
    if not (path / "config.json").is_file():
        hint = (
            "run `qslaw-pipe prepare` first" if model is None else "pass a local Hugging Face model directory"
        )
        raise QslawError(f"no model at {path}", hint)
    return path


def copy_model_files(src: Path, dst: Path) -> None:
    """The config, tokenizer and processor files of model directory `src` (not its weights or manifest)."""
    for f in Path(src).iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "manifest.json":
            shutil.copy2(f, Path(dst) / f.name)
