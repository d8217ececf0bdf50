"""Shared Click plumbing: options for config fields (defaults shown from the dataclass), one-line errors,
human or JSON output."""

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from qslaw_pipe.errors import QslawError


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    if int(os.environ.get("RANK", "0")) > 0:  # under torchrun one rank's loading bars are enough
        transformers.logging.disable_progress_bar()
    logging.getLogger("torchao").setLevel(logging.ERROR)


DEBUG = {"on": False}  # `qslaw-pipe --debug ...`: show tracebacks instead of one-line errors


OS_ERRORS = {  # errno -> (what it says, the fix)
    errno.ENOSPC: ("no space left on the device", "free some space, or use a --run-dir on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or use a --run-dir on another disk"),
    errno.EROFS: ("a read-only file system", "use a writable location"),
    errno.EACCES: ("no permission", "check the path's permissions"),
    errno.EPERM: ("no permission", "check the path's permissions"),
}


def os_error(e: BaseException) -> OSError | None:
    """The operating-system error behind `e`: an OSError, or one a library reports as text ("os error 28")."""
    if isinstance(e, OSError) and e.errno is not None:
        return e
    found = re.search(r"os error (\d+)", str(e))
    if found is None:
        return None
    code = int(found.group(1))
    path = re.search(r'at path "([^"]*)"', str(e))
    return OSError(code, os.strerror(code), path.group(1) if path else None)


def describe(e: BaseException) -> tuple[str, str] | None:
    """(problem, fix) for the failures a user can cause that surface as library exceptions; an OS error
    names its real cause (a full disk, a read-only file system), never "a damaged file"."""
    from safetensors import SafetensorError

    if isinstance(e, QslawError):
        return e.problem, e.fix
    if isinstance(e, UnicodeError):
        return f"a file or path is not valid UTF-8 ({e.reason})", "use UTF-8 text files and path names"
    cause = os_error(e)
    if cause is not None:
        name = f" ({cause.filename})" if cause.filename else ""
        said, fix = OS_ERRORS.get(cause.errno, (cause.strerror, "check the path"))
        if isinstance(cause, IsADirectoryError | NotADirectoryError | FileNotFoundError | FileExistsError):
            return f"{cause.strerror}: {cause.filename}", "check the path"
        return f"{said}{name}", fix
    if isinstance(e, SafetensorError):
        return f"a safetensors file is damaged ({e})", "re-run the stage that wrote it with --force"
    return None


REPORT_ENV = "QSLAW_ERROR_REPORT"  # set by the --nproc launcher: where a rank leaves the one error line


def _speak(line: str, code: int, peers_lost: bool) -> None:
    """Say the error once for the whole job: in one process, itself; among torchrun's ranks, rank 0 (or a
    rank that lost its peers); under our --nproc launcher, into its report file, which it prints."""
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    if rank != 0 and not peers_lost:
        return
    report = os.environ.get(REPORT_ENV)
    if not report:
        click.echo(line, err=True)
        return
    with contextlib.suppress(FileExistsError):  # the first rank to speak is heard
        with open(report, "x", encoding="utf-8") as f:
            f.write(f"{code}\t{line}")


def user_errors(fn):
    """One error boundary for every command: known failures (QslawError and the library errors bad input
    causes) become `error: <problem>; <fix>` with exit status 2, anything else one line that asks for
    `--debug` and a report (exit 1); once per job under torchrun (_speak). With `qslaw-pipe --debug` the
    traceback is shown instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit, click.exceptions.Exit, click.ClickException):
            raise
        except Exception as e:
            if DEBUG["on"]:
                raise
            peers_lost = False
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                from qslaw_pipe.pipeline import distributed

                if not isinstance(e, QslawError) and distributed.comm_failure(e):
                    e, peers_lost = distributed.lost_peers(e, "a collective"), True
                peers_lost = peers_lost or "lost its peers" in str(getattr(e, "problem", ""))
            known = describe(e)
            if known is None:
                first = (str(e).strip().splitlines() or [""])[0][:200]
                line = f"error: unexpected {type(e).__name__}: {first}; rerun with `qslaw-pipe --debug` and report the traceback"
                _speak(line, 1, peers_lost)
                sys.exit(1)
            problem, fix = known
            _speak(f"error: {problem}" + (f"; {fix}" if fix else ""), 2, peers_lost)
            sys.exit(2)

    return wrapper


def emit(result: dict, as_json: bool, human: str) -> None:
    """Print the result as JSON (`--json`) or as the human summary."""
    click.echo(json.dumps(result, indent=2, sort_keys=True, default=str) if as_json else human)


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field `name` (default_factory called)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def shown_default(value: Any, flag: str) -> str | None:
    """How --help shows a default: bools as the flag's on/off name, empty and None as nothing."""
    if isinstance(value, bool):
        return flag if value else f"no-{flag}"
    if value is None or value == ():
        return None
    return str(value)


class ShownDefault(click.Option):
    """An option that is None unless given (so recipes apply) but shows `shown` as its default."""

    def __init__(self, *args, shown: str | None = None, **kwargs):
        super().__init__(*args, show_default=False, **kwargs)
        self.shown = shown

    def get_help_extra(self, ctx: click.Context) -> dict:
        extra = super().get_help_extra(ctx)
        if self.shown is not None:
            extra["default"] = self.shown
        return extra


class ConfigOption(ShownDefault):
    """An option that sets field `config_field` of dataclass `config_class` (tests read these)."""

    def __init__(self, *args, config_class: type, config_field: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.config_class, self.config_field = config_class, config_field


def field_option(cls: type, name: str, help: str = "", *, flag: str | None = None, **kwargs):
    """`--kebab-name` for field `name` of config dataclass `cls`. Unset it is None, so a recipe's value
    and then the dataclass default apply; --help shows the dataclass default, never a copy of it."""
    default = field_default(cls, name)
    flag = flag or name.replace("_", "-")
    decls = [f"--{flag}/--no-{flag}"] if isinstance(default, bool) else [f"--{flag}"]
    if "type" not in kwargs and isinstance(default, int | float | str) and not isinstance(default, bool):
        kwargs["type"] = type(default)
    return click.option(
        *decls,
        name,
        cls=ConfigOption,
        config_class=cls,
        config_field=name,
        shown=shown_default(default, flag),
        default=None,
        help=help,
        **kwargs,
    )


run_dir_option = click.option(
    "--run-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run directory; this stage writes RUN_DIR/<stage>/.",
)
force_option = click.option(
    "--force", is_flag=True, help="Replace an existing artifact made with another config."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
config_option = click.option(
    "--config",
    "recipe",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML recipe with this stage's keys (the flags' names); flags given on the command line override it.",
)
model_option = click.option(
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="Local Hugging Face model directory (LLaVA-style or causal LM). Default: the model built by `qslaw-pipe prepare`.",
)
text_option = click.option(
    "--text",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Raw text corpus: the first half calibrates and trains, the second half is held out. "
    "Default: WikiText-2 test from ../shared/data ($QSLAW_TEXT).",
)
onnx_dir_option = click.option(
    "--onnx",
    "onnx_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An export directory written by `qslaw-pipe export --format onnx`: run it in onnxruntime instead of PyTorch.",
)


def done(result, what: str) -> str:
    """'wrote PATH (what)' or 'reused PATH (what)' for a StageResult."""
    return f"{'reused' if result.reused else 'wrote'} {result.artifact.path} ({what})"


def report(result, as_json: bool, what: str, details: str = "") -> None:
    """Print a StageResult: `wrote|reused PATH (what)` and the details, or (--json) its metrics."""
    m = result.artifact.metrics
    record = {"artifact": str(result.artifact.path), "reused": result.reused, **m}
    emit(record, as_json, done(result, what) + details)


def stage_options(fn=None, *, force: bool = True):
    """The options every stage command ends with: --config, --force (unless force=False), --json, and
    the one-line error boundary."""

    def wrap(f):
        f = json_option(user_errors(f))
        return config_option(force_option(f) if force else f)

    return wrap(fn) if fn is not None else wrap


def compute_options(cls: type):
    """--device and --dtype for config dataclass `cls` (fields `device`, `dtype`)."""

    def wrap(f):
        f = field_option(
            cls, "dtype", "Compute dtype: auto (bf16 on CUDA, fp32 on the CPU), fp32, bf16 or fp16."
        )(f)
        return field_option(
            cls, "device", "Where to compute: auto (CUDA when there is one), cpu, cuda, cuda:N."
        )(f)

    return wrap


nproc_option = click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Data parallel on this machine: start N processes (torchrun --standalone --nproc-per-node N), each "
    "on a share of the samples (one CPU core or one GPU each). Several machines: README, Scaling out.",
)


def without_nproc(argv: list[str]) -> list[str]:
    """The command line minus its --nproc option (what each started process runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def relaunch_under_torchrun(nproc: int | None) -> None:
    """With --nproc N > 1 outside torchrun: run this same command under torchrun with N local processes
    and exit with its status. Otherwise return (one process, or already a torchrun worker). The processes'
    output streams through; torchrun's own failure report is held back whenever a process left the one
    error line (REPORT_ENV), which is printed once, with its exit status (2 for bad input)."""
    if not nproc or nproc == 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "error"
        env = {
            **os.environ,
            REPORT_ENV: str(report),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        proc = subprocess.Popen(
            [*cmd, "-m", "qslaw_pipe", *without_nproc(sys.argv[1:])],
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
        )
        held: list[str] = []
        for line in proc.stderr:
            if held or LAUNCHER_LINE.match(line):  # from torchrun's report on, everything waits
                held.append(line)
            else:
                sys.stderr.write(line)
        status = proc.wait()
        if report.is_file():
            code, line = report.read_text(encoding="utf-8").split("\t", 1)
            click.echo(line, err=True)
            raise SystemExit(int(code))
        killed = _killed_worker("".join(held), nproc)
        if killed is not None:  # the launcher then stopped the others before they could say so
            click.echo(killed, err=True)
            raise SystemExit(1)
        sys.stderr.write("".join(held))
        raise SystemExit(status)


def _killed_worker(report: str, nproc: int) -> str | None:
    """The one error line for torchrun's report of a worker that a signal ended (exit code -N)."""
    cause = report.split("Root Cause", 1)[-1]
    rank = re.search(r"rank\s*:\s*(\d+)", cause)
    code = re.search(r"exitcode\s*:\s*(-\d+)", cause)
    if not (rank and code):
        return None
    import signal

    name = (
        signal.Signals(-int(code.group(1))).name
        if -int(code.group(1)) in signal.valid_signals()
        else "a signal"
    )
    return (
        f"error: process {rank.group(1)} of {nproc} was ended by {name}, and the others were stopped; "
        "rerun the same command: it resumes from the last checkpoint"
    )


# torchrun's own lines: its logger (E1205 12:00:00.000 123 .../torch/distributed/...) and its traceback
LAUNCHER_LINE = re.compile(r"^([EWI]\d{4} .*torch/distributed/|Traceback \(most recent call last\))")
