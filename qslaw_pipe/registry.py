"""What every extension point's table shares: a row names its value (a CLI choice), one line of help and
the module that implements it, imported only when the row is used, so a table costs nothing to read."""

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

from qslaw_pipe.errors import QslawError


@dataclass(frozen=True)
class Entry:
    """name: the CLI value; help: one line for --help; module: the implementation's dotted path."""

    name: str
    help: str
    module: str

    def impl(self) -> ModuleType:
        return importlib.import_module(self.module)


E = TypeVar("E", bound=Entry)


def table(*entries: E) -> dict[str, E]:
    """The rows by name; a name twice is a programming error."""
    rows: dict[str, E] = {}
    for e in entries:
        if e.name in rows:
            raise ValueError(f"two rows named {e.name}")
        rows[e.name] = e
    return rows


def lookup(rows: dict[str, E], name: str, flag: str) -> E:
    """The row called `name`, or one line naming the flag and its valid values."""
    if name not in rows:
        raise QslawError(f"invalid {flag} {name}", f"use one of {', '.join(rows)}")
    return rows[name]
