"""The package's layering, read from the source with `ast` (README, "Layout"):
kernels/ imports nothing of the package; no stage imports another (run aside); pipeline/ and exports/
never reach up into stages/; every pipeline/ module serves more than one stage or exporter; the fold
record is the only reader of the fold header."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qslaw_pipe"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every qslaw_pipe module `path` imports (`from a import b` counts a.b too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == "qslaw_pipe"}


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}
IMPORTS = {m: {i for i in _imports(p) if i in MODULES} for m, p in MODULES.items()}


def _area(module: str) -> str:
    """'kernels', 'pipeline', 'exports', 'stages.<stage>', or the root module itself."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "stages":
        return f"stages.{parts[2]}"
    return parts[1] if len(parts) > 1 else module


def test_kernels_import_nothing_of_the_package():
    bad = {
        m: i for m, i in IMPORTS.items() if _area(m) == "kernels" and any(_area(x) != "kernels" for x in i)
    }
    assert not bad


def test_no_stage_imports_another_except_run():
    bad = {
        m: sorted(x for x in i if _area(x).startswith("stages.") and _area(x) != _area(m))
        for m, i in IMPORTS.items()
        if _area(m).startswith("stages.") and _area(m) != "stages.run"
    }
    assert not {m: i for m, i in bad.items() if i}


@pytest.mark.parametrize("area", ["pipeline", "exports", "kernels"])
def test_lower_layers_never_import_stages(area):
    bad = {
        m: i for m, i in IMPORTS.items() if _area(m) == area and any(_area(x).startswith("stages") for x in i)
    }
    assert not bad


def _users(module: str, seen: frozenset = frozenset()) -> set[str]:
    """The stages and exporters that use `module`, directly or through other pipeline modules."""
    users = set()
    for m, imported in IMPORTS.items():
        if module not in imported or m in seen:
            continue
        if _area(m) == "pipeline":
            users |= _users(m, seen | {module})
        elif _area(m).startswith("stages.") or _area(m) == "exports":
            users.add(".".join(m.split(".")[:3]) if _area(m) == "exports" else _area(m))
    return users


def test_every_pipeline_module_serves_more_than_one_stage_or_exporter():
    pipeline = [m for m in MODULES if _area(m) == "pipeline" and not MODULES[m].name == "__init__.py"]
    lonely = {m: sorted(_users(m)) for m in pipeline if len(_users(m)) < 2}
    assert not lonely, f"belongs to its one user: {lonely}"


def test_only_the_fold_record_reads_the_fold_header():
    record = "qslaw_pipe.pipeline.folded"
    readers = [
        m
        for m, p in MODULES.items()
        if m != record
        and any(key in p.read_text() for key in ('"shapes"', '"packing"', ".qweight", "FOLDED_FILE"))
    ]
    assert not readers
