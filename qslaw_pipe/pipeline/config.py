"""Stage configs: frozen dataclasses built from CLI flags or a YAML recipe. Unknown keys, values of the
wrong type (a string "false" for a bool) and non-finite numbers are errors naming the key."""

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
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
    hints = typing.get_type_hints(cls)
    values = {k: _typed(k, v, hints[k], source) for k, v in data.items()}
    return cls(**values)


def _typed(key: str, value: Any, hint: Any, source: str) -> Any:
    """`value` checked against the field's annotation (int, float, str, bool, tuple[str, ...], X | None)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    kind = next(o for o in options if o is not type(None))
    origin = typing.get_origin(kind) or kind
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) for x in v),
    }[origin](value)
    if not ok:
        what = (
            "a finite number"
            if origin is float
            else "a list of strings"
            if origin is tuple
            else "an int"
            if origin is int
            else f"a {origin.__name__}"
        )
        raise QslawError(
            f"{key} in {source} must be {what}, got {value!r}", f"give {key.replace('_', '-')} {what}"
        )
    return tuple(value) if origin is tuple else float(value) if origin is float else value


def read_mapping(path: Path, parse: Callable[[str], Any], fix: str, error: type = QslawError) -> dict:
    """The mapping a JSON or YAML file holds; unreadable, unparsable or not a mapping is `error(one line)`."""
    try:
        value = parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise error(f"cannot read {path} ({type(e).__name__})", fix) from e
    if not isinstance(value, dict):
        raise error(f"{path} is not a mapping of keys to values", fix)
    return value


def load_recipe(path: Path) -> dict[str, Any]:
    """A YAML recipe as a mapping with `_` keys (`batch-size` and `batch_size` alike)."""
    loaded = read_mapping(
        path, lambda text: yaml.safe_load(text) or {}, "pass a YAML file of key: value lines"
    )
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


def identity_of(cfg: Any) -> dict:
    """The fields of config dataclass `cfg` that decide what its stage's artifact is: all of them but those
    the class names in `PLACEMENT` (where and how it computed, which give the same values: a run calibrated on
    a GPU is reused on a CPU; input locations, which are checked by content among the inputs)."""
    placement = getattr(type(cfg), "PLACEMENT", ())
    return {k: v for k, v in config_to_dict(cfg).items() if k not in placement}
