"""The package's layering, read from the source with `ast` (README, "Layout"):
kernels/ imports nothing of the package; no stage imports another (run aside); pipeline/ and exports/
never reach up into stages/; every pipeline/ module serves more than one stage or exporter; the fold
record is the only reader of the fold header."""

import ast
import re
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


def _registered_by(module: str) -> str | None:
    """The registry package that names `module` as an implementation (a row's module path, imported on use)."""
    package = module.rsplit(".", 1)[0]
    init = MODULES.get(package)
    return package if init is not None and f'.{module.rsplit(".", 1)[1]}"' in init.read_text() else None


def _users(module: str, seen: frozenset = frozenset()) -> set[str]:
    """The stages and exporters that use `module`, directly, through other pipeline modules, or (a registry
    row's implementation) through its registry."""
    registry = _registered_by(module)
    if registry is not None and registry not in seen:
        return _users(registry, seen | {module})
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
        and not m.startswith("qslaw_pipe.stages.calibrate.imports")  # peers' checkpoints have a .qweight too
        and any(key in p.read_text() for key in ('"shapes"', '"packing"', ".qweight", "FOLDED_FILE"))
    ]
    assert not readers


EXPORTER_PACKAGES = (
    "qslaw_pipe.exports.onnx",
    "qslaw_pipe.exports.torchao",
    "qslaw_pipe.exports.compressed_tensors",
)


def _exporter(module: str) -> str | None:
    return next((p for p in EXPORTER_PACKAGES if module == p or module.startswith(p + ".")), None)


def test_exporters_do_not_import_each_other():
    bad = {
        m: sorted(x for x in i if _exporter(x) not in (None, _exporter(m)))
        for m, i in IMPORTS.items()
        if _exporter(m) is not None
    }
    assert not {m: i for m, i in bad.items() if i}


def test_each_package_docstring_lists_its_files():
    missing = {}
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        kids = [
            p.name if p.suffix == ".py" else f"{p.name}/"
            for p in init.parent.iterdir()
            if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()
        ]
        lonely = [k for k in kids if k not in doc]
        if lonely:
            missing[str(init.relative_to(PACKAGE))] = lonely
    assert not missing


def _registries() -> dict[str, list[str]]:
    from qslaw_pipe.exports import EXPORTERS
    from qslaw_pipe.exports.onnx.vision import VISION
    from qslaw_pipe.pipeline.arch import FAMILIES
    from qslaw_pipe.pipeline.methods import METHODS
    from qslaw_pipe.stages.calibrate.calibrators import CALIBRATORS

    return {
        "tuning methods": list(METHODS),
        "calibrators": list(CALIBRATORS),
        "exporters": list(EXPORTERS),
        "model families": [t for a in FAMILIES for t in a.model_types],
        "onnx vision kinds": list(VISION),
    }


def test_every_registry_row_has_a_test():
    """Each row's name is exercised by name in a test (a tiny run of it, or its family's model)."""
    tests = "\n".join(p.read_text() for p in (PACKAGE.parent / "tests").rglob("*.py"))
    from tests.families import MODELS_BY_TYPE

    untested = {
        kind: [
            n for n in names if f'"{n}"' not in tests and f"'{n}'" not in tests and n not in MODELS_BY_TYPE
        ]
        for kind, names in _registries().items()
    }
    assert not {k: v for k, v in untested.items() if v}


def test_no_code_outside_a_registry_branches_on_its_names():
    """`method == "qslaw"` and the like live in their registry row's own file, never in a stage."""
    names = "|".join(
        re.escape(n) for kind, rows in _registries().items() if kind != "model families" for n in rows
    )
    subject = r"(method|format|FORMAT|vision_export|kind|name)\b[\])\s]*"
    pattern = re.compile(subject + r"""(==|!=)\s*["'](""" + names + r""")["']""")
    own = ("pipeline/methods", "stages/calibrate/calibrators.py", "exports/", "pipeline/arch")
    hits = {
        str(p.relative_to(PACKAGE)): pattern.findall(p.read_text())
        for p in PACKAGE.rglob("*.py")
        if not str(p.relative_to(PACKAGE)).startswith(own)
    }
    assert not {k: v for k, v in hits.items() if v}


def test_the_onnx_option_lists_mirror_the_tables_they_name():
    from qslaw_pipe.exports import onnx as options
    from qslaw_pipe.exports.onnx.decoder import LM_HEADS, PRECISIONS
    from qslaw_pipe.exports.onnx.int4_ops import INT4_OPS

    assert options.INT4_OP_NAMES == tuple(INT4_OPS)
    assert options.LM_HEAD_NAMES == tuple(LM_HEADS) and options.PRECISION_NAMES == tuple(PRECISIONS)
