"""Where qslaw-pipe keeps what it builds: the user's cache dir (override with QSLAW_CACHE)."""

import os
from pathlib import Path


def cache_root() -> Path:
    if env := os.environ.get("QSLAW_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qslaw-pipe"


def models_root() -> Path:
    return cache_root() / "models"


def default_model_name(image_size: int, aligned: bool = True) -> str:
    """default-vlm-i84-aligned (the shipped projector loaded), or default-vlm-i84 (a fresh projector)."""
    return f"default-vlm-i{image_size}" + ("-aligned" if aligned else "")


def default_model_dir(image_size: int = 84, aligned: bool = True) -> Path:
    return models_root() / default_model_name(image_size, aligned)
