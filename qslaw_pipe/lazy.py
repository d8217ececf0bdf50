"""Package attributes imported on first use (PEP 562), so that importing a package, for its command's
--help or its config, never imports torch: `__getattr__ = lazy_exports(__name__, {"run": "stage", ...})`."""

import importlib
from collections.abc import Callable


def lazy_exports(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` resolving each name in `table` from its submodule (relative to `package`)."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{table[name]}")
        return module if table[name] == name else getattr(module, name)

    return __getattr__
