"""Stage configs: frozen dataclasses built from CLI flags or a YAML recipe; unknown keys are errors."""

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from qslaw_pipe.errors import QslawError

T = TypeVar("T")


def config_from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build `cls` from `data`, rejecting keys the dataclass does not define."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise QslawError(
            f"unknown key(s) {', '.join(unknown)} in {source}", f"valid keys are: {', '.join(sorted(names))}"
        )
    return cls(**data)


def load_recipe(path: Path) -> dict[str, Any]:
    """A YAML recipe as a mapping with `_` keys (`batch-size` and `batch_size` alike)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise QslawError(
            f"cannot read recipe {path} ({type(e).__name__})", "pass a YAML file of key: value lines"
        ) from e
    if not isinstance(loaded, dict):
        raise QslawError(f"{path} is not a YAML mapping", "write one `key: value` per line")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def merge_recipe(cls: type[T], recipe: Path | None, flags: Mapping[str, Any]) -> T:
    """A YAML recipe's keys, overridden by flags the user actually set (not None)."""
    data = load_recipe(recipe) if recipe is not None else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    return config_from_mapping(cls, data, source=str(recipe) if recipe else "flags")


def config_to_dict(cfg: Any) -> dict:
    """JSON-ready dict of a config dataclass (paths as strings)."""

    def plain(v):
        return str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
