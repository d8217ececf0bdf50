"""`export`'s settings: `format` names an exporter (exports/EXPORTERS), whose own Config holds the rest."""

from collections.abc import Mapping
from dataclasses import fields

from qslaw_pipe.errors import QslawError
from qslaw_pipe.exports import EXPORTERS, exporter
from qslaw_pipe.pipeline.config import config_from_mapping

DEFAULT_FORMAT = "onnx"


def export_config(data: Mapping[str, object] | None = None, source: str = "flags", **values):
    """The chosen exporter's Config from a recipe section or flags (`format`, default onnx, and that
    exporter's fields); a field of another exporter is one line naming the format it applies to."""
    values = {**(data or {}), **values}
    name = values.pop("format", None) or DEFAULT_FORMAT
    cls = exporter(name).impl().Config
    own = {f.name for f in fields(cls)}
    for key in values:
        owner = next(
            (e for e in EXPORTERS.values() if key in {f.name for f in fields(e.impl().Config)}), None
        )
        if key not in own and owner is not None:
            flag = f"--{key.replace('_', '-')}"
            raise QslawError(
                f"{flag} applies to --format {owner.name}", f"drop {flag}, or export --format {owner.name}"
            )
    return config_from_mapping(cls, values, source)
