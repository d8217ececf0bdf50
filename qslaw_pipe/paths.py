"""Where qslaw-pipe keeps what it builds (the user's cache dir, QSLAW_CACHE overrides it) and where its
default inputs are: the default model, the default text corpus. Imports nothing heavy (the CLI's --help
reads it)."""

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


def default_text_path() -> Path:
    """WikiText-2 raw test text: $QSLAW_TEXT, else ../shared/data/wikitext-2-raw/wiki.test.raw beside the
    checkout, else Python's own English prose (pydoc topics) written once to the cache as a fallback."""
    if env := os.environ.get("QSLAW_TEXT"):
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    for base in (Path.cwd(), repo):
        cand = base.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"
        if cand.is_file():
            return cand
    return _pydoc_fallback()


def _pydoc_fallback() -> Path:
    from pydoc_data.topics import topics

    path = cache_root() / "text" / "pydoc-topics.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(topics[k] for k in sorted(topics)), encoding="utf-8")
        tmp.rename(path)
    return path


def resolve_model(model: Path | None) -> Path:
    """`--model` as given, else the default VLM built by `qslaw-pipe prepare`; refuses a non-model dir."""
    from qslaw_pipe.errors import QslawError

    path = Path(model) if model else default_model_dir()
    if not (path / "config.json").is_file():
        hint = (
            "run `qslaw-pipe prepare` first" if model is None else "pass a local Hugging Face model directory"
        )
        raise QslawError(f"no model at {path}", hint)
    return path
