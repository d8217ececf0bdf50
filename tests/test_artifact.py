"""The run-directory contract: reuse, refuse, --force, atomic publish, foreign artifacts."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.artifact import FORMAT_VERSION, MANIFEST, read_artifact, run_stage
from qslaw_pipe.pipeline.tensors import load_tensors, save_tensors


def _writer(calls):
    def work(out, resuming, upstream):
        calls.append(resuming)
        save_tensors(out / "t.safetensors", {"x": torch.arange(4.0)}, {"kind": "demo"})
        return {"loss": 1.5}

    return work


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"weights")
    return p


def test_reuse_refuse_force(tmp_path, model_file):
    run, calls = tmp_path / "run", []
    first = run_stage(run, "demo", {"a": 1}, {"model": model_file}, _writer(calls))
    assert not first.reused and first.artifact.metrics == {"loss": 1.5}
    m = json.loads((run / "demo" / MANIFEST).read_text())
    assert m["format_version"] == FORMAT_VERSION and m["config"] == {"a": 1}
    assert m["inputs"]["model"]["sha256"] and m["peak_rss_mb"] > 0 and "torch" in m["versions"]
    assert run_stage(run, "demo", {"a": 1}, {"model": model_file}, _writer(calls)).reused
    with pytest.raises(QslawError, match="different config .*a.*--force"):
        run_stage(run, "demo", {"a": 2}, {"model": model_file}, _writer(calls))
    model_file.write_bytes(b"other weights")
    with pytest.raises(QslawError, match="other inputs .*model"):
        run_stage(run, "demo", {"a": 1}, {"model": model_file}, _writer(calls))
    forced = run_stage(run, "demo", {"a": 2}, {"model": model_file}, _writer(calls), force=True)
    assert not forced.reused and forced.artifact.config == {"a": 2}
    assert len(calls) == 2
    tensors, header = load_tensors(run / "demo" / "t.safetensors")
    assert header == {"kind": "demo"} and tensors["x"].tolist() == [0, 1, 2, 3]


def test_artifact_older_than_a_config_field_counts_as_its_earlier_value(tmp_path, model_file):
    run, calls = tmp_path / "run", []
    run_stage(
        run, "demo", {"a": 1}, {"model": model_file}, _writer(calls)
    )  # written before `precision` existed
    earlier = {"precision": "fp32"}  # what the config declares such artifacts had
    again = run_stage(
        run, "demo", {"a": 1, "precision": "fp32"}, {"model": model_file}, _writer(calls), earlier=earlier
    )
    assert again.reused
    with pytest.raises(QslawError, match="different config .*precision"):
        run_stage(
            run, "demo", {"a": 1, "precision": "fp16"}, {"model": model_file}, _writer(calls), earlier=earlier
        )


def test_only_the_declared_identity_decides_reuse(tmp_path, model_file):
    run, calls = tmp_path / "run", []
    run_stage(
        run, "demo", {"a": 1, "device": "cpu"}, {"model": model_file}, _writer(calls), identity={"a": 1}
    )
    moved = run_stage(
        run, "demo", {"a": 1, "device": "cuda"}, {"model": model_file}, _writer(calls), identity={"a": 1}
    )
    assert moved.reused and moved.artifact.config == {"a": 1, "device": "cpu"} and len(calls) == 1


def test_crash_leaves_no_finished_artifact_and_resumes(tmp_path, model_file):
    run = tmp_path / "run"

    def crash(out, resuming, upstream):
        (out / "half.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_stage(run, "demo", {"a": 1}, {"model": model_file}, crash)
    assert not (run / "demo").exists()
    seen = []
    result = run_stage(run, "demo", {"a": 1}, {"model": model_file}, _writer(seen))
    assert seen == [True] and result.resumed  # same config: the partial directory is handed back


_KILLED_STAGE = """
import sys, time, torch
from qslaw_pipe.pipeline.artifact import run_stage
from qslaw_pipe.pipeline.tensors import save_tensors
def work(out, resuming, upstream):
    save_tensors(out / "big.safetensors", {"x": torch.zeros(1000)})
    print("written", flush=True)
    time.sleep(60)
    return {}
run_stage(sys.argv[1], "demo", {}, {"model": sys.argv[2]}, work)
"""


def test_killed_process_leaves_no_finished_artifact(tmp_path, model_file):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_STAGE, str(run), str(model_file)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "demo").exists()
    assert (run / ".demo.partial" / "big.safetensors").exists()
    with pytest.raises(QslawError, match="not found.*run `qslaw-pipe demo --run-dir"):
        read_artifact(run, "demo", command="qslaw-pipe demo --run-dir {run_dir}")


def test_foreign_format_and_model_are_refused(tmp_path, model_file):
    run = tmp_path / "run"
    run_stage(run, "demo", {}, {"model": model_file}, _writer([]))
    sha = read_artifact(run, "demo").manifest["model_sha256"]
    with pytest.raises(QslawError, match="another model"):
        read_artifact(run, "demo", model_sha="0" * 64)
    assert read_artifact(run, "demo", model_sha=sha).path == run / "demo"
    path = run / "demo" / MANIFEST
    m = json.loads(path.read_text())
    m["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(m))
    with pytest.raises(QslawError, match="format version"):
        read_artifact(run, "demo")


def test_missing_input_names_it(tmp_path):
    with pytest.raises(QslawError, match="input 'model' not found"):
        run_stage(tmp_path, "demo", {}, {"model": tmp_path / "nope"}, _writer([]))
    time.sleep(0)


def test_a_second_writer_gets_one_line_naming_the_holder(tmp_path):
    import os

    from qslaw_pipe.pipeline.lock import stage_lock

    with stage_lock(tmp_path, "tune"):
        with pytest.raises(QslawError, match=f"pid {os.getpid()}.*writing"):
            with stage_lock(tmp_path, "tune"):
                pass
    with stage_lock(tmp_path, "tune"):  # released when the holder is done
        pass
