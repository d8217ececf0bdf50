"""Errors for malformed data records: they name the file, the record and the field."""

from pathlib import Path

from qslaw_pipe.errors import QslawError


def bad_record(path: Path, record: object, field: str, why: str) -> QslawError:
    return QslawError(f"{path}: record {record!r}, field '{field}': {why}", "fix or remove that record")


def inside(root: Path, path: Path, source: Path, record: object, field: str) -> Path:
    """`path` resolved, refused unless it lies inside `root` (no `..`, absolute paths or symlinks out)."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if not resolved.is_relative_to(base):
        raise bad_record(source, record, field, f"path {path} leaves the dataset root {base}")
    return resolved


def require(path: Path, record: object, entry: dict, field: str, kind: type | tuple[type, ...]):
    """entry[field], checked to exist and to be of `kind`."""
    if not isinstance(entry, dict) or field not in entry:
        raise bad_record(path, record, field, "missing")
    value = entry[field]
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise bad_record(
            path, record, field, f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}"
        )
    return value
