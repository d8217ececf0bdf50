"""Benchmark: the run directory under hostile use, on a tiny model. A table of cases (bad inputs, damaged
artifacts, stale inputs, kill -9 at seeded points, two writers at once), each ending in one of:
  one-line   exit 2 with a single `error: ...; fix` line (and nothing lost)
  works      exit 0 with the right result (a damaged artifact rebuilt, a killed stage resumed bit for bit)
  SILENT     exit 0 with a wrong result          TRACEBACK  more than one line of error
  LOST       a finished artifact destroyed
Writes docs/results/reliability.{json,md}; tests/test_reliability.py runs the fast cases.

    python bench/reliability.py [--fast]
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qslaw_pipe.pipeline.sysinfo import machine_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "results"
EXPORT = "export-onnx-matmulnbits"


@dataclass
class World:
    """A tiny model M, its text C, a ScienceQA dir S, and a pristine finished run R (calibrate, tune, fold, export)."""

    root: Path
    model: Path
    text: Path
    sqa: Path
    pristine: Path

    def run_copy(self, name: str) -> Path:
        dst = self.root / "cases" / name
        shutil.copytree(self.pristine, dst)
        return dst


# the tests run the fast cases through Click's runner, without a new interpreter each
IN_PROCESS = {"on": False}
LAST = {"line": ""}  # the last command's error or note line, shown beside each case


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    res = _cli(*args, timeout=timeout)
    said = [ln for ln in res.stderr.splitlines() if ln.startswith(("error:", "note:"))]
    LAST["line"] = said[-1] if said else ""
    return res


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    if IN_PROCESS["on"]:
        from click.testing import CliRunner

        from qslaw_pipe.cli import main

        res = CliRunner().invoke(main, list(args))
        stderr = res.stderr + (
            "Traceback (in process)\n" if res.exception and not isinstance(res.exception, SystemExit) else ""
        )
        return subprocess.CompletedProcess(args, res.exit_code, res.stdout, stderr)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "qslaw_pipe", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
    )


def stage_args(w: World, stage: str, run: Path) -> list[str]:
    common = ["--run-dir", str(run)]
    return {
        "calibrate": [
            "calibrate",
            *common,
            "--model",
            str(w.model),
            "--text",
            str(w.text),
            "--method",
            "rtn",
            "--group-size",
            "32",
        ],
        "tune": [
            "tune",
            *common,
            "--model",
            str(w.model),
            "--text",
            str(w.text),
            "--data",
            str(w.sqa),
            "--steps",
            "4",
            "--batch-size",
            "2",
            "--warmup-steps",
            "1",
            "--text-seqlen",
            "16",
            "--checkpoint-every",
            "1",
            "--no-compile",
        ],
        "fold": ["fold", *common],
        "export": ["export", *common],
        "eval": ["eval", "mcq", *common, "--data", str(w.sqa), "--limit", "4"],
        "eval-onnx": [
            "eval",
            "mcq",
            *common,
            "--data",
            str(w.sqa),
            "--limit",
            "4",
            "--onnx",
            str(run / EXPORT),
        ],
    }[stage]


def build_world(root: Path) -> World:
    from tests.tiny import CORPUS, tiny_llava, tiny_scienceqa

    model = tiny_llava(root / "model")
    text = root / "corpus.txt"
    text.write_text("\n".join(CORPUS * 4) + "\n")
    w = World(root, model, text, tiny_scienceqa(root / "sqa"), root / "pristine")
    for stage in ("calibrate", "tune", "fold", "export"):
        res = cli(*stage_args(w, stage, w.pristine))
        assert res.returncode == 0, res.stderr[-2000:]
    return w


def outputs(run: Path, stage: str) -> dict:
    """The hashes of a stage's result files (tensors, graphs; not metrics.csv or loss.png, which hold timings)."""
    manifest = run / stage / "manifest.json"
    files = json.loads(manifest.read_text())["outputs"] if manifest.is_file() else {}
    return {
        k: v
        for k, v in files.items()
        if k.endswith((".safetensors", ".onnx", ".data", "qslaw_onnx.json", "targets.json"))
    }


def one_line(res: subprocess.CompletedProcess) -> bool:
    lines = [
        ln
        for ln in res.stderr.splitlines()
        if ln.strip() and not ln.startswith(("note:", "W1", "Failed to load"))
    ]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return res.returncode == 2 and len(errors) == 1 and "Traceback" not in res.stderr


def classify(res, expect_error: bool, right: bool = True, lost: bool = False) -> str:
    if lost:
        return "LOST"
    if "Traceback" in res.stderr:
        return "TRACEBACK"
    if res.returncode == 0:
        return "works" if right and not expect_error else "SILENT"
    return "one-line" if one_line(res) else "TRACEBACK"


# ---- damaged artifacts: flip, truncate, delete a file of a finished stage, then use it ----


def damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def damaged_case(stage: str, name: str, how: str, reader: str) -> Callable[[World], str]:
    def case(w: World) -> str:
        run = w.run_copy(f"damage-{stage}-{name}-{how}-{reader}")
        pristine = outputs(w.pristine, stage)
        damage(run / stage / name, how)
        res = cli(*stage_args(w, reader, run))
        if reader == stage.split("-")[0]:  # the stage itself: it must rebuild the same artifact
            return classify(res, expect_error=False, right=outputs(run, stage) == pristine)
        return classify(res, expect_error=True)

    return case


def edited_manifest(w: World) -> str:
    run = w.run_copy("edited-manifest")
    path = run / "calibrate" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"]["bits"] = 8
    path.write_text(json.dumps(manifest))
    return classify(cli(*stage_args(w, "fold", run)), expect_error=True)


# ---- stale inputs: an earlier stage or the model changed after a later stage ran ----


def recalibrated(w: World) -> str:
    run = w.run_copy("recalibrated")
    res = cli(*stage_args(w, "calibrate", run), "--bits", "3", "--force")
    assert res.returncode == 0, res.stderr
    return classify(cli(*stage_args(w, "fold", run), "--force"), expect_error=True)


def replaced_weights(w: World) -> str:
    from tests.tiny import tiny_llava

    case = w.root / "cases" / "replaced-weights"
    model, run = case / "model", case / "run"
    shutil.copytree(w.model, model)
    for stage in ("calibrate", "tune"):
        assert cli(*with_model(stage_args(w, stage, run), model)).returncode == 0
    other = tiny_llava(case / "other", seed=1)
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    return classify(cli(*stage_args(w, "fold", run)), expect_error=True)


def force_unchanged(w: World) -> str:
    run = w.run_copy("force-unchanged")
    res = cli(*stage_args(w, "calibrate", run), "--force")
    assert res.returncode == 0, res.stderr
    return classify(
        cli(*stage_args(w, "fold", run)),
        expect_error=False,
        right=outputs(run, "fold") == outputs(w.pristine, "fold"),
    )


# ---- bad input ----


def bad_input(
    args: Callable[[World, Path], list[str]], setup: Callable[[World, Path], None] | None = None
) -> Callable[[World], str]:
    def case(w: World) -> str:
        run = w.root / "cases" / f"bad-{random.random():.12f}"
        run.mkdir(parents=True)
        if setup:
            setup(w, run)
        return classify(cli(*args(w, run)), expect_error=True)

    return case


def model_with(w: World, run: Path, edit: Callable[[Path], None]) -> Path:
    m = run / "model"
    shutil.copytree(w.model, m)
    edit(m)
    return m


def calibrate_on(edit: Callable[[Path], None]):
    return bad_input(
        lambda w, run: [
            "calibrate",
            "--run-dir",
            str(run / "r"),
            "--model",
            str(model_with(w, run, edit)),
            "--text",
            str(w.text),
            "--method",
            "rtn",
            "--group-size",
            "32",
        ]
    )


def sqa_with(edit: Callable[[Path], None]):
    def args(w: World, run: Path) -> list[str]:
        shutil.copytree(w.pristine / "calibrate", run / "r" / "calibrate")
        d = run / "sqa"
        shutil.copytree(w.sqa, d)
        edit(d)
        return [
            "tune",
            "--run-dir",
            str(run / "r"),
            "--model",
            str(w.model),
            "--text",
            str(w.text),
            "--data",
            str(d),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--no-compile",
        ]

    return bad_input(args)


def _problems(d: Path, fn) -> None:
    p = json.loads((d / "problems.json").read_text())
    fn(p)
    (d / "problems.json").write_text(json.dumps(p))


def _first(p: dict) -> dict:
    return p[next(iter(p))]


def recipe_case(text: str):
    def args(w: World, run: Path) -> list[str]:
        (run / "recipe.yaml").write_text(text)
        return [
            "tune",
            "--run-dir",
            str(run / "r"),
            "--model",
            str(w.model),
            "--config",
            str(run / "recipe.yaml"),
        ]

    return bad_input(args)


def tune_flag(*flags: str):
    def args(w: World, run: Path) -> list[str]:
        shutil.copytree(w.pristine / "calibrate", run / "r" / "calibrate")
        return [*stage_args(w, "tune", run / "r"), *flags]

    return bad_input(args)


def runs_dir_is_file(w: World) -> str:
    f = w.root / "cases" / "a-file"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("x")
    a = classify(cli(*stage_args(w, "calibrate", f)), expect_error=True)
    b = classify(cli(*stage_args(w, "calibrate", f / "under")), expect_error=True)
    return a if a != "one-line" else b


# ---- faults: kill -9 at a seeded point, then resume; two writers ----


HEAVY = {  # long enough that a kill at 3-9 s (12-16 s under --nproc 2) lands inside the stage on a fast CPU
    "calibrate": ["--method", "omniquant", "--epochs", "300", "--nsamples", "8", "--seqlen", "32", "--force"],
    "tune": ["--steps", "600", "--force"],
}
PRIOR = {
    "calibrate": [],
    "tune": ["calibrate"],
    "fold": ["calibrate", "tune"],
    "export": ["calibrate", "tune", "fold"],
}
_REFERENCE: dict[str, Path] = {}


def _prepared(w: World, name: str, stage: str) -> Path:
    run = w.root / "cases" / name
    run.mkdir(parents=True)
    for p in PRIOR[stage]:
        shutil.copytree(w.pristine / p, run / p)
    return run


def reference(w: World, stage: str) -> Path:
    """An uninterrupted run of `stage` with the kill cases' settings (the pristine run for fold and export)."""
    if stage not in HEAVY:
        return w.pristine
    if stage not in _REFERENCE:
        run = _prepared(w, f"reference-{stage}", stage)
        assert cli(*stage_args(w, stage, run), *HEAVY[stage]).returncode == 0
        _REFERENCE[stage] = run
    return _REFERENCE[stage]


def killed(stage: str, seed: int) -> Callable[[World], str]:
    def case(w: World) -> str:
        ref = reference(w, stage)
        run = _prepared(w, f"kill-{stage}-{seed}", stage)
        args = [*stage_args(w, stage, run), *HEAVY.get(stage, [])]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "qslaw_pipe", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(random.Random(seed).uniform(3.0, 9.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        name = EXPORT if stage == "export" else stage
        finished = (run / name / "manifest.json").is_file()
        half_done = (run / name).exists() and not finished
        res = cli(*[a for a in args if a != "--force"])
        LAST["line"] = (
            "killed after it had finished (reused)" if finished else "killed mid-stage, then resumed"
        )
        right = outputs(run, name) == outputs(ref, name)
        return "LOST" if half_done else classify(res, expect_error=False, right=right)

    return case


def two_writers(w: World) -> str:
    run = w.root / "cases" / "two-writers"
    run.mkdir(parents=True)
    shutil.copytree(w.pristine / "calibrate", run / "calibrate")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "qslaw_pipe", *stage_args(w, "tune", run)]
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)
    second = cli(*stage_args(w, "tune", run))
    first.communicate()
    if first.returncode != 0:
        return "LOST"
    right = outputs(run, "tune") == outputs(w.pristine, "tune")
    if second.returncode == 0:  # the first had finished already: the second reused its artifact
        return classify(second, expect_error=False, right=right)
    return classify(second, expect_error=True) if right else "SILENT"


def with_model(args: list[str], model: Path) -> list[str]:
    """A stage's arguments for another model than the world's."""
    return [str(model) if i and args[i - 1] == "--model" else a for i, a in enumerate(args)]


def causal_lm_export(w: World) -> str:
    from tests.tiny import tiny_llama, tiny_tokenizer

    model = w.root / "cases" / "causal-lm" / "model"
    tok = tiny_tokenizer()
    tiny_llama(len(tok)).save_pretrained(model)
    tok.save_pretrained(model)
    run = model.parent / "run"
    for args in (
        with_model(stage_args(w, "calibrate", run), model),
        ["fold", "--run-dir", str(run)],
    ):
        assert cli(*args).returncode == 0, LAST["line"]
    out = run / "export-onnx-matmulnbits"  # text LMs export a decoder-only graph set, no vision graph
    res = cli("export", "--run-dir", str(run))
    right = (out / "decoder.onnx").is_file() and not (out / "vision.onnx").exists()
    return classify(res, expect_error=False, right=right)


def symlink_in_model(w: World) -> str:
    """A link out of the model directory: its content would be hashed and copied into every export."""
    model = w.root / "cases" / "symlink" / "model"
    shutil.copytree(w.model, model)
    (model / "notes.txt").symlink_to("/etc/hostname")
    res = cli(*with_model(stage_args(w, "calibrate", model.parent / "run"), model))
    return classify(res, expect_error=True)


def non_utf8_run_dir(w: World) -> str:
    """Either one line, or it works: the artifact is written and reads back intact."""
    run = Path(os.fsdecode(bytes(w.root / "cases") + b"/run-\xff"))
    res = cli(*stage_args(w, "calibrate", run))
    if res.returncode != 0:
        return classify(res, expect_error=True)
    from qslaw_pipe.pipeline.artifact import read_artifact

    read_artifact(run, "calibrate")
    return classify(res, expect_error=False)


def truncated_manifest(w: World) -> str:
    run = w.run_copy("truncated-manifest")
    damage(run / "calibrate" / "manifest.json", "truncate")
    return classify(cli(*stage_args(w, "fold", run), "--force"), expect_error=True)


def garbled_partial(w: World) -> str:
    run = w.root / "cases" / "garbled-partial"
    shutil.copytree(w.pristine / "calibrate", run / "calibrate")
    (run / ".tune.partial").mkdir(parents=True)
    (run / ".tune.partial" / "partial.json").write_bytes(b"\x00{garbled")
    res = cli(*stage_args(w, "tune", run))
    return classify(res, expect_error=False, right=outputs(run, "tune") == outputs(w.pristine, "tune"))


def run_without_mcq(w: World) -> str:
    d = w.root / "cases" / "llava-json"
    d.mkdir(parents=True)
    shutil.copy(next((w.sqa / "images" / "train").rglob("*.png")), d / "a.png")
    (d / "llava.json").write_text(
        json.dumps(
            [
                {
                    "image": "a.png",
                    "conversations": [
                        {"from": "human", "value": "<image> what?"},
                        {"from": "gpt", "value": "a shape"},
                    ],
                }
            ]
        )
    )
    return classify(
        cli(
            "run",
            "--run-dir",
            str(d / "run"),
            "--model",
            str(w.model),
            "--text",
            str(w.text),
            "--data",
            str(d / "llava.json"),
        ),
        expect_error=True,
    )


# ---- second pass: hub-cache models, resume files, --force, links, exports, faults, budgets, --nproc ----


def hub_model_runs(w: World) -> str:
    from tests.helpers.hub import hub_snapshot

    case = w.root / "cases" / "hub"
    snapshot, run = hub_snapshot(w.model, case / "hub"), case / "run"
    for stage in ("calibrate", "tune"):
        res = cli(*with_model(stage_args(w, stage, run), snapshot))
        if res.returncode:
            return classify(res, expect_error=False)
    res = cli(*stage_args(w, "fold", run))
    right = (run / "fold" / "config.json").is_file() and outputs(run, "fold") == outputs(w.pristine, "fold")
    return classify(res, expect_error=False, right=right)


def hub_model_other_weights(w: World) -> str:
    from tests.helpers.hub import hub_snapshot
    from tests.tiny import tiny_llava

    case = w.root / "cases" / "hub-other"
    other = hub_snapshot(tiny_llava(case / "other", seed=1), case / "hub")
    run = case / "run"
    assert cli(*with_model(stage_args(w, "calibrate", run), other)).returncode == 0
    return classify(cli(*stage_args(w, "tune", run)), expect_error=True)


def _interrupted(w: World, stage: str, name: str) -> Path:
    """A run of `stage` (with the kill cases' settings) killed mid-way, leaving its partial directory."""
    run = _prepared(w, name, stage)
    args = [*stage_args(w, stage, run), *HEAVY[stage]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qslaw_pipe", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    partial = run / f".{stage}.partial"
    marker = partial / ("resume/block_000.safetensors" if stage == "calibrate" else "checkpoint.safetensors")
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return run


def damaged_resume(stage: str, how: str) -> Callable[[World], str]:
    """A resume file flipped or truncated after a kill: the stage must not resume from it (it starts over or
    keeps what is intact) and must end where an uninterrupted run ends."""

    def case(w: World) -> str:
        ref = reference(w, stage)
        run = _interrupted(w, stage, f"resume-{stage}-{how}")
        partial = run / f".{stage}.partial"
        target = partial / (
            "resume/block_000.safetensors" if stage == "calibrate" else "checkpoint.safetensors"
        )
        if not target.exists():
            return "HARNESS the kill came before a resume file was written"
        damage(target, how)
        res = cli(*[a for a in (*stage_args(w, stage, run), *HEAVY[stage]) if a != "--force"])
        return classify(res, expect_error=False, right=outputs(run, stage) == outputs(ref, stage))

    return case


def other_process_count_then_force(w: World) -> str:
    run = _interrupted(w, "calibrate", "other-nproc")
    resume = run / ".calibrate.partial" / "resume"
    if (resume / "state.safetensors").exists():
        (resume / "state.safetensors").rename(resume / "state-0-of-2.safetensors")
    args = [*stage_args(w, "calibrate", run), *HEAVY["calibrate"]]
    stuck = cli(*[a for a in args if a != "--force"])
    if stuck.returncode != 2:
        return classify(stuck, expect_error=True)
    ref = reference(w, "calibrate")
    return classify(
        cli(*args), expect_error=False, right=outputs(run, "calibrate") == outputs(ref, "calibrate")
    )


def linked_stage_dir_force(w: World) -> str:
    case = w.root / "cases" / "linked-stage"
    shutil.copytree(w.pristine / "calibrate", case / "elsewhere" / "calibrate")
    run = case / "run"
    run.mkdir(parents=True)
    (run / "calibrate").symlink_to(case / "elsewhere" / "calibrate")
    for _ in range(2):
        res = cli(*stage_args(w, "calibrate", run), "--force")
        if res.returncode:
            return classify(res, expect_error=False)
    right = (case / "elsewhere" / "calibrate" / "manifest.json").is_file() and not (
        run / "calibrate"
    ).is_symlink()
    return classify(
        res, expect_error=False, right=right and outputs(run, "calibrate") == outputs(w.pristine, "calibrate")
    )


def generate_damaged_export(w: World) -> str:
    run = w.run_copy("generate-damaged-export")
    damage(run / EXPORT / "vision.onnx", "flip")
    image = next((w.sqa / "images" / "test").rglob("*.png"))
    return classify(
        cli("generate", "--onnx", str(run / EXPORT), "--image", str(image), "--prompt", "What?"),
        expect_error=True,
    )


def eval_other_runs_export(w: World) -> str:
    case = w.root / "cases" / "other-export"
    run = case / "run"
    for stage in ("calibrate", "tune", "fold"):
        extra = ["--seed", "7"] if stage == "tune" else []
        assert cli(*stage_args(w, stage, run), *extra).returncode == 0, LAST["line"]
    args = [*stage_args(w, "eval", run), "--onnx", str(w.pristine / EXPORT)]
    return classify(cli(*args), expect_error=True)


def moved_model(w: World) -> str:
    case = w.root / "cases" / "moved-model"
    first, run = case / "first", case / "run"
    shutil.copytree(w.model, first)
    for stage in ("calibrate", "tune"):
        assert cli(*with_model(stage_args(w, stage, run), first)).returncode == 0, LAST["line"]
    moved = case / "moved"
    first.rename(moved)
    assert cli(*with_model(stage_args(w, "calibrate", run), moved), "--force").returncode == 0, LAST["line"]
    tune = cli(*with_model(stage_args(w, "tune", run), moved))
    if tune.returncode:
        return classify(tune, expect_error=False)
    return classify(
        cli(*stage_args(w, "fold", run)),
        expect_error=False,
        right=outputs(run, "fold") == outputs(w.pristine, "fold"),
    )


def _mount(path: Path, *options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    remount = "remount" in options
    cmd = [
        "mount",
        *([] if remount else ["-t", "tmpfs"]),
        "-o",
        ",".join(options),
        *([] if remount else ["tmpfs"]),
        str(path),
    ]
    return shutil.which("mount") is not None and subprocess.run(cmd, capture_output=True).returncode == 0


def read_only_run_dir(next_stage: bool) -> Callable[[World], str]:
    """A finished run on a read-only file system: its stages are reused (no write needed), and a stage that
    must write says the file system is read-only."""

    def case(w: World) -> str:
        ro = w.root / "cases" / f"read-only-{next_stage}"
        if not _mount(ro, "size=64m"):
            return "HARNESS this machine cannot mount a file system"
        try:
            shutil.copytree(w.pristine / "calibrate", ro / "run" / "calibrate")
            if not _mount(ro, "remount", "ro"):
                return "HARNESS this machine cannot remount read-only"
            if next_stage:
                return classify(cli(*stage_args(w, "fold", ro / "run")), expect_error=True)
            return classify(cli(*stage_args(w, "calibrate", ro / "run")), expect_error=False)
        finally:
            subprocess.run(["umount", str(ro)], capture_output=True)

    return case


def full_disk(stage: str) -> Callable[[World], str]:
    def case(w: World) -> str:
        small = w.root / "cases" / f"full-disk-{stage}"
        done = [p for p in PRIOR[stage]]
        room = sum(
            -(-f.stat().st_size // 4096) * 4096
            for p in done
            for f in (w.pristine / p).rglob("*")
            if f.is_file()
        )
        room += 64 * 1024
        if not _mount(small, f"size={room // 1024}k"):
            return "HARNESS this machine cannot mount a file system"
        try:
            for p in done:
                shutil.copytree(w.pristine / p, small / "run" / p)
            res = cli(*stage_args(w, stage, small / "run"))
            if res.returncode == 0:
                return "HARNESS the stage fit in the small disk"
            said = "no space left" in LAST["line"]
            return classify(res, expect_error=True) if said else "TRACEBACK"
        finally:
            subprocess.run(["umount", str(small)], capture_output=True)

    return case


def nproc_bad_input(w: World) -> str:
    res = cli(
        *stage_args(w, "calibrate", w.root / "cases" / "nproc-bad"),
        "--rule",
        "re:nothing=skip",
        "--nproc",
        "2",
    )
    once = sum(ln.startswith("error:") for ln in res.stderr.splitlines()) == 1
    return classify(res, expect_error=True) if once and "ChildFailedError" not in res.stderr else "TRACEBACK"


def _descendants(root: int) -> dict[int, str]:
    """Every process below `root`, by pid, with its command line (torchrun starts its workers in sessions of
    their own, so the tree, not the session, finds them)."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in table.splitlines() if len(line.split(None, 2)) == 3]
    children: dict[int, list[tuple[int, str]]] = {}
    for pid, ppid, args in rows:
        children.setdefault(int(ppid), []).append((int(pid), args))
    found, todo = {}, [root]
    while todo:
        for pid, args in children.get(todo.pop(), []):
            found[pid] = args
            todo.append(pid)
    return found


def nproc_killed_rank(stage: str, *extra: str) -> Callable[[World], str]:
    """One of two processes killed mid-stage: the job ends with one line naming the lost peers."""

    def case(w: World) -> str:
        run = _prepared(w, f"nproc-kill-{stage}{'-'.join(extra)}", stage)
        args = [*stage_args(w, stage, run), *HEAVY[stage], *extra, "--nproc", "2"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "QSLAW_DIST_TIMEOUT": "20", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "qslaw_pipe", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        time.sleep(random.Random(stage).uniform(12.0, 16.0))
        pids = sorted(  # the workers: not our launcher, not torchrun's agent
            pid
            for pid, args in _descendants(proc.pid).items()
            if "-m qslaw_pipe" in args and "torch.distributed.run" not in args
        )
        if len(pids) < 2:
            proc.kill()
            return "HARNESS the workers had not started or had finished"
        os.kill(pids[-1], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
        res = subprocess.CompletedProcess(args, proc.returncode, "", err)
        said = [ln for ln in err.splitlines() if ln.startswith("error:")]
        LAST["line"] = said[-1] if said else ""
        named = len(said) == 1 and ("lost its peers" in said[0] or "was ended by" in said[0])
        if not named or "Traceback" in err or res.returncode == 0:
            return "TRACEBACK"
        return "one-line"

    return case


def budget(*flags: str) -> Callable[[World], str]:
    def args(w: World, run: Path) -> list[str]:
        shutil.copytree(w.pristine / "calibrate", run / "r" / "calibrate")
        return [*stage_args(w, "tune", run / "r"), *flags]

    return bad_input(args)


def isa_typo(w: World) -> str:
    from qslaw_pipe.kernels import build as kb

    run = w.run_copy("isa-typo")
    os.environ.setdefault("QSLAW_ORT_OPS", str(kb.build(w.root / "ortlib", cuda=False)))
    assert cli(*stage_args(w, "export", run), "--int4-op", "custom").returncode == 0, LAST["line"]
    image = next((w.sqa / "images" / "test").rglob("*.png"))
    os.environ["QSLAW_CPU_ISA"] = "avx521"
    try:
        args = [
            "generate",
            "--onnx",
            str(run / "export-onnx-custom"),
            "--image",
            str(image),
            "--prompt",
            "What?",
        ]
        return classify(cli(*args), expect_error=True)
    finally:
        del os.environ["QSLAW_CPU_ISA"]


def cases() -> list[tuple[str, str, bool, Callable[[World], str]]]:
    """(name, kind, fast, run) for every case."""
    out = []
    for stage, name, reader in (
        ("calibrate", "qparams.safetensors", "fold"),
        ("calibrate", "targets.json", "fold"),
        ("tune", "trainable.safetensors", "fold"),
        ("tune", "metrics.csv", "eval"),
        ("fold", "model.safetensors", "export"),
        ("fold", "config.json", "export"),
        (EXPORT, "vision.onnx", "eval-onnx"),
        (EXPORT, "decoder.onnx", "eval-onnx"),
    ):
        for how in ("flip", "truncate", "delete"):
            out.append(
                (
                    f"{how} {stage}/{name}, then {reader}",
                    "damaged",
                    how == "flip",
                    damaged_case(stage, name, how, reader),
                )
            )
    for stage, name in (
        ("calibrate", "qparams.safetensors"),
        ("tune", "trainable.safetensors"),
        ("fold", "model.safetensors"),
    ):
        out.append(
            (
                f"flip {stage}/{name}, then {stage} again",
                "damaged",
                True,
                damaged_case(stage, name, "flip", stage),
            )
        )
    out += [
        ("calibrate manifest edited (bits: 8)", "damaged", True, edited_manifest),
        ("calibrate --force with another config, then fold", "stale", True, recalibrated),
        ("model weights replaced after tune, then fold", "stale", True, replaced_weights),
        ("calibrate --force unchanged keeps fold valid", "stale", True, force_unchanged),
        (
            "config.json not UTF-8",
            "bad input",
            True,
            calibrate_on(lambda m: (m / "config.json").write_bytes(b"\xff\xfe{")),
        ),
        (
            "config.json without model_type",
            "bad input",
            True,
            calibrate_on(lambda m: (m / "config.json").write_text("{}")),
        ),
        (
            "config.json with auto_map",
            "bad input",
            True,
            calibrate_on(
                lambda m: (m / "config.json").write_text(
                    json.dumps(
                        {**json.loads((m / "config.json").read_text()), "auto_map": {"AutoModel": "x.Y"}}
                    )
                )
            ),
        ),
        (
            "weights file random bytes",
            "bad input",
            True,
            calibrate_on(lambda m: (m / "model.safetensors").write_bytes(os.urandom(4096))),
        ),
        (
            "weights file missing",
            "bad input",
            True,
            calibrate_on(lambda m: (m / "model.safetensors").unlink()),
        ),
        (
            "text corpus binary",
            "bad input",
            True,
            bad_input(
                lambda w, run: [
                    "calibrate",
                    "--run-dir",
                    str(run / "r"),
                    "--model",
                    str(w.model),
                    "--text",
                    str(_binary(run)),
                    "--method",
                    "omniquant",
                    "--group-size",
                    "32",
                ]
            ),
        ),
        (
            "ScienceQA problems.json invalid",
            "bad input",
            True,
            sqa_with(lambda d: (d / "problems.json").write_text("{")),
        ),
        (
            "ScienceQA pid_splits.json invalid",
            "bad input",
            True,
            sqa_with(lambda d: (d / "pid_splits.json").write_text("[1,")),
        ),
        (
            "ScienceQA image path leaves the dataset",
            "bad input",
            True,
            sqa_with(lambda d: _problems(d, lambda p: _first(p).update(image="../../../../etc/passwd"))),
        ),
        (
            "ScienceQA answer: true",
            "bad input",
            True,
            sqa_with(lambda d: _problems(d, lambda p: _first(p).update(answer=True))),
        ),
        (
            "an image that is not an image",
            "bad input",
            True,
            sqa_with(lambda d: next((d / "images" / "train").rglob("*.png")).write_bytes(b"not a png")),
        ),
        (
            "bad re: regex in --rule",
            "bad input",
            True,
            bad_input(lambda w, run: [*stage_args(w, "calibrate", run / "r"), "--rule", "re:([=skip"]),
        ),
        (
            "--rule that matches nothing",
            "bad input",
            True,
            bad_input(
                lambda w, run: [*stage_args(w, "calibrate", run / "r"), "--rule", "re:nothing_named_so=skip"]
            ),
        ),
        ("recipe is invalid YAML", "bad input", True, recipe_case("steps: [1,\n")),
        ('recipe compile: "false" (a string)', "bad input", True, recipe_case('compile: "false"\n')),
        ("tune --lm-lr nan", "bad input", True, tune_flag("--lm-lr", "nan")),
        ("tune --projector-lr 1e30", "bad input", True, tune_flag("--projector-lr", "1e30")),
        (
            "calibrate --lr inf",
            "bad input",
            True,
            bad_input(
                lambda w, run: [
                    *stage_args(w, "calibrate", run / "r"),
                    "--method",
                    "omniquant",
                    "--lr",
                    "inf",
                ]
            ),
        ),
        ("run dir is a file, or lies under one", "bad input", True, runs_dir_is_file),
        ("two tune processes on one run dir", "fault", False, two_writers),
    ]
    out += [
        ("exporting a causal-LM run (decoder-only ONNX)", "supported", True, causal_lm_export),
        ("a link out of the model dir (to /etc/hostname)", "bad input", True, symlink_in_model),
        ("a run dir whose name is not UTF-8", "bad input", True, non_utf8_run_dir),
        ("calibrate manifest truncated, then fold", "damaged", True, truncated_manifest),
        ("garbled partial.json, then tune", "damaged", True, garbled_partial),
        ("run --data a LLaVA JSON (no multiple choice)", "bad input", True, run_without_mcq),
    ]
    for stage in ("calibrate", "tune", "fold", "export"):
        for seed in (0, 1):
            out.append(
                (f"kill -9 in {stage} (seed {seed}), then resume", "fault", False, killed(stage, seed))
            )
    out += [
        ("a hub-cache model (snapshot of links to blobs), every stage", "bad input", True, hub_model_runs),
        ("a hub-cache model with other weights, then tune", "stale", True, hub_model_other_weights),
        (
            "kill calibrate, flip its block file, resume",
            "damaged",
            False,
            damaged_resume("calibrate", "flip"),
        ),
        (
            "kill calibrate, truncate its block file, resume",
            "damaged",
            False,
            damaged_resume("calibrate", "truncate"),
        ),
        ("kill tune, flip its checkpoint, resume", "damaged", False, damaged_resume("tune", "flip")),
        ("kill tune, truncate its checkpoint, resume", "damaged", False, damaged_resume("tune", "truncate")),
        ("an attempt of another process count, then --force", "fault", False, other_process_count_then_force),
        ("a stage directory that is a link, --force twice", "bad input", True, linked_stage_dir_force),
        ("generate --onnx on a flipped vision.onnx", "damaged", True, generate_damaged_export),
        ("eval mcq --onnx with another run's export", "stale", True, eval_other_runs_export),
        ("model moved, calibrate --force from the new path, tune, fold", "stale", True, moved_model),
        ("a read-only run directory: reuse", "fault", False, read_only_run_dir(False)),
        ("a read-only run directory: the next stage", "fault", False, read_only_run_dir(True)),
        ("a full disk during tune (small tmpfs)", "fault", False, full_disk("tune")),
        ("a full disk during fold (small tmpfs)", "fault", False, full_disk("fold")),
        ("calibrate --nproc 2 with bad input", "bad input", False, nproc_bad_input),
        ("calibrate --nproc 2, one process killed", "fault", False, nproc_killed_rank("calibrate")),
        ("tune --nproc 2, one process killed", "fault", False, nproc_killed_rank("tune")),
        ("tune --nproc 2 --shard, one process killed", "fault", False, nproc_killed_rank("tune", "--shard")),
        ("tune --steps 1000000000", "bad input", True, budget("--steps", "1000000000")),
        ("tune --batch-size 100000", "bad input", True, budget("--batch-size", "100000")),
        ("generate with a QSLAW_CPU_ISA typo", "bad input", False, isa_typo),
        ("run recipe: a section that is a list", "bad input", True, run_recipe("calibrate: [1, 2]\n")),
        ("run recipe: a section that is a number", "bad input", True, run_recipe("tune: 5\n")),
        ("run recipe: bits as a string", "bad input", True, run_recipe("calibrate: {bits: '4'}\n")),
        ("run recipe: export format null", "bad input", True, run_recipe("export: {format: null}\n")),
        ("run recipe: a section that is not a stage", "bad input", True, run_recipe("train: {steps: 3}\n")),
        (
            "--device cuda: (no index)",
            "bad input",
            True,
            bad_input(lambda w, run: [*stage_args(w, "calibrate", run / "r"), "--device", "cuda:"]),
        ),
        (
            "--device cuda on a CPU machine",
            "bad input",
            True,
            bad_input(lambda w, run: [*stage_args(w, "calibrate", run / "r"), "--device", "cuda"]),
        ),
        (
            "--dtype int8",
            "bad input",
            True,
            bad_input(lambda w, run: [*stage_args(w, "calibrate", run / "r"), "--dtype", "int8"]),
        ),
        (
            "calibrate --bits 5",
            "bad input",
            True,
            bad_input(lambda w, run: [*stage_args(w, "calibrate", run / "r"), "--bits", "5"]),
        ),
        (
            "calibrate --group-size 7",
            "bad input",
            True,
            bad_input(lambda w, run: [*stage_args(w, "calibrate", run / "r"), "--group-size", "7"]),
        ),
        (
            "calibrate --nsamples 0",
            "bad input",
            True,
            bad_input(
                lambda w, run: [
                    *stage_args(w, "calibrate", run / "r"),
                    "--method",
                    "omniquant",
                    "--nsamples",
                    "0",
                ]
            ),
        ),
        ("tune --mix-ratio 1:x", "bad input", True, tune_flag("--mix-ratio", "1:x")),
        ("tune --method nope", "bad input", True, tune_flag("--method", "nope")),
        ("tune --lora-rank 0 (qlora)", "bad input", True, tune_flag("--method", "qlora", "--lora-rank", "0")),
        ("tune --data a missing directory", "bad input", True, tune_flag("--data", "/nonexistent/sqa")),
        (
            "eval mcq --limit -1",
            "bad input",
            True,
            bad_input(
                lambda w, run: [*stage_args(w, "eval", w.run_copy(f"limit-{run.name}")), "--limit", "-1"]
            ),
        ),
        (
            "generate --max-new-tokens 0",
            "bad input",
            True,
            bad_input(
                lambda w, run: [
                    "generate",
                    "--model",
                    str(w.model),
                    "--prompt",
                    "hi",
                    "--max-new-tokens",
                    "0",
                ]
            ),
        ),
        (
            "generate --temperature -1",
            "bad input",
            True,
            bad_input(
                lambda w, run: ["generate", "--model", str(w.model), "--prompt", "hi", "--temperature", "-1"]
            ),
        ),
        (
            "export --format nope",
            "bad input",
            True,
            bad_input(
                lambda w, run: [*stage_args(w, "export", w.run_copy(f"fmt-{run.name}")), "--format", "nope"]
            ),
        ),
        (
            "export --precision fp16 --int4-op custom",
            "bad input",
            True,
            bad_input(
                lambda w, run: [
                    *stage_args(w, "export", w.run_copy(f"prec-{run.name}")),
                    "--precision",
                    "fp16",
                    "--int4-op",
                    "custom",
                ]
            ),
        ),
        (
            "fold without a calibrate artifact",
            "bad input",
            True,
            bad_input(lambda w, run: ["fold", "--run-dir", str(run / "empty")]),
        ),
        (
            "export without a fold artifact",
            "bad input",
            True,
            bad_input(lambda w, run: ["export", "--run-dir", str(run / "empty")]),
        ),
    ]
    return out


def run_recipe(text: str):
    def args(w: World, run: Path) -> list[str]:
        (run / "recipe.yaml").write_text(text)
        return [
            "run",
            "--run-dir",
            str(run / "r"),
            "--model",
            str(w.model),
            "--text",
            str(w.text),
            "--config",
            str(run / "recipe.yaml"),
        ]

    return bad_input(args)


def _binary(run: Path) -> Path:
    p = run / "binary.txt"
    p.write_bytes(os.urandom(2048))
    return p


def run_cases(selected, world: World) -> list[dict]:
    rows = []
    for name, kind, fast, fn in selected:
        t, LAST["line"] = time.perf_counter(), ""
        try:
            outcome = fn(world)
        except Exception as e:  # the harness itself failed: count it, never hide it
            outcome = f"HARNESS {type(e).__name__}: {e}"[:200]
        said = LAST["line"].replace(str(world.root), "…").replace("|", "/")[:160]
        row = {"case": name, "kind": kind, "fast": fast, "outcome": outcome, "said": said}
        rows.append({**row, "s": round(time.perf_counter() - t, 1)})
        print(f"{outcome:<10} {name}: {said}", flush=True)
    return rows


def table(rows: list[dict], meta: dict) -> str:
    count = lambda *o: sum(r["outcome"] in o for r in rows)  # noqa: E731
    lines = [
        f"# Reliability of the run directory ({meta['device']})",
        "",
        f"`python bench/reliability.py {meta['argv']}`; {meta['when']}; tiny model; {meta['wall_s']:.0f} s.",
        "",
        f"Cases: {len(rows)}; handled with one line: {count('one-line')}; worked (rebuilt or resumed identically): "
        f"{count('works')}; silent wrong results: {count('SILENT')}; lost artifacts: {count('LOST')}; "
        f"tracebacks: {count('TRACEBACK')}; harness failures: {sum(r['outcome'].startswith('HARNESS') for r in rows)}.",
        "",
        "| case | kind | outcome | what it said | s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['case']} | {r['kind']} | {r['outcome']} | {r['said']} | {r['s']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="Only the fast cases (as the tests run them).")
    ap.add_argument("--in-process", action="store_true", help="Run commands through Click's runner.")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    IN_PROCESS["on"] = args.in_process
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp))
        rows = run_cases([c for c in cases() if c[2] or not args.fast], world)
    meta = {
        "device": machine_name("cpu"),
        "argv": " ".join(argv if argv is not None else sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d"),
        "wall_s": time.perf_counter() - start,
    }
    if not args.fast:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reliability.json").write_text(json.dumps({"meta": meta, "cases": rows}, indent=1))
        (args.out / "reliability.md").write_text(table(rows, meta))
    print(table(rows, meta))
    return rows


if __name__ == "__main__":
    main()
