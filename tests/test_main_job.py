"""The real main job, as CI runs it: `qslaw-pipe run` builds the real default model from an empty cache and
runs every stage on it with a small budget. Then portability: the run directory copied elsewhere and run
again on another CPU kernel path (ATEN_CPU_CAPABILITY=default) with its own fresh cache, as on another
machine, reuses every stage; the base model built on that path is the same model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qslaw_pipe.pipeline import aligned
from qslaw_pipe.pipeline.artifact import artifact_at, identity
from tests.helpers.assets import needs_assets

pytestmark = needs_assets()

SMALL = ["--nsamples", "2", "--seqlen", "32", "--epochs", "1", "--steps", "2", "--limit", "4"]
STAGES = ("calibrate", "tune", "fold", "export-onnx-matmulnbits", "eval-mcq-export-onnx-matmulnbits")
STEPS = ("prepare", "calibrate", "tune", "fold", "export", "eval mcq", "generate")
ALIGNED, BASE = Path("models/default-vlm-i84-aligned"), Path("models/default-vlm-i84")
OTHER_PATH = {"ATEN_CPU_CAPABILITY": "default"}  # torch's portable kernels: not what any AVX2+ CPU runs


def qslaw(args: list[str], cache: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "QSLAW_CACHE": str(cache), **(env or {})}
    cmd = [sys.executable, "-m", "qslaw_pipe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=1200)


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("main-job")
    res = qslaw(["run", "--run-dir", str(root / "run"), *SMALL, "--json"], root / "cache")
    assert res.returncode == 0, res.stderr[-3000:]
    return root, json.loads(res.stdout), res.stderr


def test_the_main_job_runs_every_stage_from_an_empty_cache(main_job):
    root, out, err = main_job
    assert all(f"[{i}/7] {name}" in err for i, name in enumerate(STEPS, 1))
    model = artifact_at(root / "cache" / ALIGNED)
    assert model.metrics["projector"] == "aligned"
    assert model.metrics["base_fingerprint"] == aligned.read_shipped(84).manifest["base"]
    for stage in STAGES:  # each verified: its files against its manifest, its inputs up the chain
        artifact_at(root / "run" / stage)
    assert out["n"] == 4 and 0 <= out["accuracy"] <= 1
    assert out["model"] == str(root / "cache" / ALIGNED) and out["demo"]["answer"].strip()


def test_running_it_again_reuses_every_stage_and_ends_with_the_answer(main_job):
    root, out, _ = main_job
    stamps = {s: (root / "run" / s / "manifest.json").stat().st_mtime_ns for s in STAGES}
    res = qslaw(["run", "--run-dir", str(root / "run"), *SMALL], root / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(reused)" in res.stderr
    assert {s: (root / "run" / s / "manifest.json").stat().st_mtime_ns for s in STAGES} == stamps
    assert res.stdout.strip().splitlines()[-1] == f"model answer: {out['demo']['answer']}"


def test_a_copied_run_is_reused_on_another_cpu_path_with_its_own_cache(main_job, tmp_path):
    root, out, _ = main_job
    copy = tmp_path / "elsewhere"
    shutil.copytree(root / "run", copy)
    manifests = {s: (copy / s / "manifest.json").read_text() for s in STAGES}
    res = qslaw(["run", "--run-dir", str(copy), *SMALL, "--json"], tmp_path / "cache", OTHER_PATH)
    assert res.returncode == 0, res.stderr[-2000:]
    assert identity(tmp_path / "cache" / ALIGNED) == identity(root / "cache" / ALIGNED)
    assert {s: (copy / s / "manifest.json").read_text() for s in STAGES} == manifests  # reused, not redone
    assert json.loads(res.stdout)["accuracy"] == out["accuracy"]


def test_the_base_model_is_the_same_on_another_cpu_path(tmp_path):
    made = []
    for name, env in (("here", None), ("other", OTHER_PATH)):
        res = qslaw(["prepare", "--no-align"], tmp_path / name, env)
        assert res.returncode == 0, res.stderr[-2000:]
        made.append(identity(tmp_path / name / BASE))
    assert made[0] == made[1]
