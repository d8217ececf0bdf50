"""--help shows every config field's default as the dataclass has it; every config field has a flag;
every command takes --config; run's flags show the packaged recipe's values."""

import dataclasses
import re

import click
import pytest

from qslaw_pipe.cli import main
from qslaw_pipe.cli_common import ConfigOption, field_default
from qslaw_pipe.pipeline.config import load_recipe
from qslaw_pipe.stages import run as run_stage


def _commands(group: click.Group, prefix: str = ""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


COMMANDS = dict(_commands(main))


def _shown_default(cmd: click.Command, param: click.Parameter) -> str | None:
    ctx = click.Context(cmd, info_name=cmd.name)
    _, text = param.get_help_record(ctx)
    found = re.search(r"\[default: (.*?)\]", text)
    return found.group(1) if found else None


def _as_field_value(shown: str, default):
    if isinstance(default, bool):
        return not shown.startswith("no-")
    return type(default)(shown)


@pytest.mark.parametrize(
    "name", sorted(set(COMMANDS) - {"run"})
)  # run: test_run_help_shows_the_packaged_recipe; export: every exporter's own Config
def test_help_defaults_come_from_the_config_dataclass(name):
    cmd = COMMANDS[name]
    options = [p for p in cmd.params if isinstance(p, ConfigOption)]
    assert options, f"{name} has no config options"
    for p in options:
        default, shown = field_default(p.config_class, p.config_field), _shown_default(cmd, p)
        if default is None or default == ():
            assert shown is None, f"{name} {p.opts}: shows {shown} for an unset default"
        else:
            assert shown is not None and _as_field_value(shown, default) == default, (name, p.opts, shown)
    classes = {p.config_class for p in options}  # one, or (export) one per exporter
    assert len(classes) == 1 or name == "export", f"{name} mixes config classes"
    for cls in classes:
        fields = {f.name for f in dataclasses.fields(cls)}
        flagged = {p.config_field for p in options if p.config_class is cls}
        assert fields == flagged, f"{name}: {cls.__module__} fields without a flag"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_takes_a_recipe(name):
    assert any("--config" in p.opts for p in COMMANDS[name].params)


def test_run_help_shows_the_packaged_recipe():
    recipe = load_recipe(run_stage.RECIPE)
    cmd = COMMANDS["run"]
    for flag, targets in run_stage.FLAGS.items():
        section, key = targets[0]
        param = next(p for p in cmd.params if p.name == flag)
        expected = (recipe.get(section) or {}).get(key, field_default(run_stage.SECTIONS[section], key))
        assert _shown_default(cmd, param) == f"{expected} (run.yaml)"
