"""The run directory's second reliability pass, one test per defect found by trying it as a hostile user would:
hub-cache models, --force that clears an interrupted attempt, checksummed resume files, linked stage
directories, exports checked before they run or are scored, moved models, read-only run directories,
disk faults named for what they are, early refusals of runaway budgets, and one error line under --nproc."""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qslaw_pipe.cli import main
from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.artifact import identity
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import export as ex
from qslaw_pipe.stages import fold as fd
from qslaw_pipe.stages import tune as tn
from tests.helpers.hub import hub_snapshot
from tests.helpers.interrupt import interrupted_calibration, interrupted_tuning
from tests.tiny import tiny_llava, tiny_scienceqa

RTN = cal.CalibrateConfig(method="rtn", bits=4, group_size=32)
OMNI = cal.CalibrateConfig(method="omniquant", bits=4, group_size=32, nsamples=4, seqlen=16, epochs=2)


def _tune_cfg(sqa, **kw):
    return tn.TuneConfig(
        data=str(sqa), steps=6, batch_size=2, warmup_steps=1, text_seqlen=16, compile=False, **kw
    )


def _cli(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def sqa(tmp_path_factory):
    return tiny_scienceqa(tmp_path_factory.mktemp("sqa"))


# ---- 1. hub-cache models ----


def test_a_hub_cache_model_is_known_by_its_content_and_runs_every_stage(llava_dir, corpus, sqa, tmp_path):
    snapshot = hub_snapshot(llava_dir, tmp_path / "hub")
    other = hub_snapshot(tiny_llava(tmp_path / "other", seed=1), tmp_path / "hub2")
    assert identity(snapshot) == identity(llava_dir) != identity(other)
    run = tmp_path / "r"
    cal.run(RTN, run, other, corpus, bar=False)
    with pytest.raises(QslawError, match="made from another model"):
        tn.run(_tune_cfg(sqa), run, snapshot, corpus, bar=False)
    cal.run(RTN, run, snapshot, corpus, bar=False, force=True)
    tn.run(_tune_cfg(sqa), run, snapshot, corpus, bar=False)
    fold = fd.run(fd.FoldConfig(), run).artifact.path
    assert (fold / "config.json").is_file() and (fold / "tokenizer.json").is_file()
    assert not (fold / "config.json").is_symlink()
    assert ex.run(ex.export_config(), run).artifact.metrics["layers"] == 2


def test_a_link_out_of_the_model_directory_is_refused(llava_dir, corpus, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(llava_dir, model)
    (tmp_path / "secret.txt").write_text("not the model's")
    (model / "notes.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(QslawError, match="is a link out of"):
        cal.run(RTN, tmp_path / "r", model, corpus, bar=False)


# ---- 2. --force clears an interrupted attempt ----


def test_force_starts_over_an_attempt_of_another_process_count(llava_dir, corpus, tmp_path, monkeypatch):
    partial = interrupted_calibration(OMNI, tmp_path / "r", llava_dir, corpus, monkeypatch)
    state = partial / "resume" / "state.safetensors"
    state.rename(state.with_name("state-0-of-2.safetensors"))  # as a 2-process attempt leaves it
    with pytest.raises(QslawError, match="another number of processes.*--force"):
        cal.run(OMNI, tmp_path / "r", llava_dir, corpus, bar=False)
    res = cal.run(OMNI, tmp_path / "r", llava_dir, corpus, bar=False, force=True)
    whole = cal.run(OMNI, tmp_path / "whole", llava_dir, corpus, bar=False)
    key = "qparams.safetensors"
    assert res.artifact.manifest["outputs"][key] == whole.artifact.manifest["outputs"][key]


# ---- 3. resume files carry a checksum ----


def _flip(path: Path, at: float = 0.7) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_damaged_calibration_resume_file_is_never_resumed_from(llava_dir, corpus, tmp_path, monkeypatch):
    whole = cal.run(OMNI, tmp_path / "whole", llava_dir, corpus, bar=False).artifact
    partial = interrupted_calibration(OMNI, tmp_path / "split", llava_dir, corpus, monkeypatch)
    _flip(partial / "resume" / "block_000.safetensors")
    split = cal.run(OMNI, tmp_path / "split", llava_dir, corpus, bar=False).artifact
    assert (
        split.manifest["outputs"]["qparams.safetensors"] == whole.manifest["outputs"]["qparams.safetensors"]
    )


def test_a_damaged_tune_checkpoint_is_never_resumed_from(llava_dir, corpus, sqa, tmp_path, monkeypatch):
    for name in ("whole", "split"):
        cal.run(RTN, tmp_path / name, llava_dir, corpus, bar=False)
    cfg = _tune_cfg(sqa, checkpoint_every=2)
    whole = tn.run(cfg, tmp_path / "whole", llava_dir, corpus, bar=False).artifact
    checkpoint = (
        interrupted_tuning(cfg, tmp_path / "split", llava_dir, corpus, monkeypatch) / "checkpoint.safetensors"
    )
    _flip(checkpoint)
    with pytest.raises(QslawError, match="is damaged"):
        load_tensors(checkpoint)
    split = tn.run(cfg, tmp_path / "split", llava_dir, corpus, bar=False).artifact
    key = "trainable.safetensors"
    assert split.manifest["outputs"][key] == whole.manifest["outputs"][key]


def test_force_clears_a_truncated_tune_checkpoint(llava_dir, corpus, sqa, tmp_path, monkeypatch):
    cal.run(RTN, tmp_path / "r", llava_dir, corpus, bar=False)
    cfg = _tune_cfg(sqa, checkpoint_every=2)
    checkpoint = (
        interrupted_tuning(cfg, tmp_path / "r", llava_dir, corpus, monkeypatch) / "checkpoint.safetensors"
    )
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])
    forced = tn.run(cfg, tmp_path / "r", llava_dir, corpus, bar=False, force=True)
    assert forced.artifact.metrics["steps"] == 6


# ---- 4. a stage directory that is a link ----


def test_force_replaces_a_stage_directory_that_is_a_link(llava_dir, corpus, tmp_path):
    run = tmp_path / "r"
    cal.run(RTN, tmp_path / "elsewhere", llava_dir, corpus, bar=False)
    run.mkdir()
    (run / "calibrate").symlink_to(tmp_path / "elsewhere" / "calibrate")
    for _ in range(2):  # a leftover .calibrate.old would stop the second
        res = cal.run(RTN, run, llava_dir, corpus, bar=False, force=True)
        assert res.artifact.path == run / "calibrate" and not (run / "calibrate").is_symlink()
    assert (tmp_path / "elsewhere" / "calibrate" / "manifest.json").is_file()  # what it linked to is kept
    assert not (run / ".calibrate.old").exists()


# ---- 5 and 6. exports are checked before they run or are scored ----


def test_generate_refuses_a_damaged_export(folded_run, tmp_path):
    run, image = folded_run
    out = ex.run(ex.export_config(), run).artifact.path
    copy = tmp_path / "export"
    shutil.copytree(out, copy)
    _flip(copy / "vision.onnx", 0.9)
    image.save(tmp_path / "img.png")
    code, said = _cli("generate", "--onnx", copy, "--image", tmp_path / "img.png", "--prompt", "What?")
    assert code == 2 and "vision.onnx changed since the stage wrote it" in said


def test_eval_mcq_refuses_another_runs_export(folded_run, llava_dir, corpus, sqa, tmp_path):
    run, _ = folded_run
    theirs = ex.run(ex.export_config(), run).artifact.path
    ours = tmp_path / "r"
    cal.run(RTN, ours, llava_dir, corpus, bar=False)
    tn.run(_tune_cfg(sqa, seed=3), ours, llava_dir, corpus, bar=False)
    fd.run(fd.FoldConfig(), ours)
    code, said = _cli("eval", "mcq", "--run-dir", ours, "--data", sqa, "--limit", "2", "--onnx", theirs)
    assert code == 2 and "was exported from another run's fold" in said


# ---- 7. a moved model is the same model to every stage ----


def test_a_moved_model_is_the_same_model_to_every_stage(llava_dir, corpus, sqa, tmp_path):
    first, run = tmp_path / "first", tmp_path / "r"
    shutil.copytree(llava_dir, first)
    cal.run(RTN, run, first, corpus, bar=False)
    tn.run(_tune_cfg(sqa), run, first, corpus, bar=False)
    moved = tmp_path / "moved"
    first.rename(moved)
    cal.run(RTN, run, moved, corpus, bar=False, force=True)
    assert tn.run(_tune_cfg(sqa), run, moved, corpus, bar=False).reused
    assert fd.run(fd.FoldConfig(), run).artifact.metrics["source"] == "tune"


# ---- read-only run directories, disk faults, non-UTF-8 names ----


def _mount(path: Path, *options: str) -> bool:
    """A tmpfs (or remount) here when this machine lets us (root with mount rights), else False."""
    path.mkdir(parents=True, exist_ok=True)
    args = ["mount", "-o", ",".join(options), *(["tmpfs"] if "remount" not in options else []), str(path)]
    if "remount" not in options:
        args[1:1] = ["-t", "tmpfs"]
    return shutil.which("mount") is not None and subprocess.run(args, capture_output=True).returncode == 0


def test_a_read_only_run_directory_reuses_its_finished_stages(llava_dir, corpus, tmp_path):
    ro = tmp_path / "ro"
    if not _mount(ro, "size=64m"):
        pytest.skip("cannot mount a file system here")
    try:
        cal.run(RTN, ro / "r", llava_dir, corpus, bar=False)
        assert _mount(ro, "remount", "ro")
        assert cal.run(RTN, ro / "r", llava_dir, corpus, bar=False).reused
        code, said = _cli("fold", "--run-dir", ro / "r")
        assert code == 2 and "a read-only file system" in said and "damaged" not in said
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def _pages(directory: Path) -> int:
    """What a directory's files take on a tmpfs: whole 4 KiB pages."""
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in directory.rglob("*") if f.is_file())


def test_a_full_disk_is_named_as_one(folded_run, tmp_path):
    run, _ = folded_run
    room = _pages(run / "calibrate") + _pages(run / "tune") + _pages(run / "fold") // 2  # fold does not fit
    small = tmp_path / "small"
    if not _mount(small, f"size={room // 1024}k"):
        pytest.skip("cannot mount a file system here")
    try:
        shutil.copytree(run / "calibrate", small / "r" / "calibrate")
        shutil.copytree(run / "tune", small / "r" / "tune")
        code, said = _cli("fold", "--run-dir", small / "r")
        assert code == 2 and "no space left on the device" in said and "damaged" not in said
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_a_run_directory_name_that_is_not_utf8_is_named(llava_dir, corpus, tmp_path):
    run = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff"))
    with pytest.raises(QslawError, match="not valid UTF-8"):
        cal.run(RTN, run, llava_dir, corpus, bar=False)


# ---- runaway budgets, named early ----


@pytest.mark.parametrize(
    "flags, said",
    [
        ({"batch_size": 1000}, "larger than the 12 training examples"),
        ({"steps": 10**9}, "would pass over the 12 training examples"),
    ],
)
def test_a_budget_beyond_the_data_is_refused_before_the_first_step(
    llava_dir, corpus, sqa, tmp_path, flags, said
):
    cal.run(RTN, tmp_path / "r", llava_dir, corpus, bar=False)
    with pytest.raises(QslawError, match=said):
        tn.run(dataclasses.replace(_tune_cfg(sqa), **flags), tmp_path / "r", llava_dir, corpus, bar=False)


# ---- poor rows: bad values that used to surface as `unexpected ...` ----


@pytest.mark.parametrize(
    "recipe, said",
    [
        ("calibrate: [1, 2]\n", "section calibrate in"),
        ("tune: 5\n", "section tune in"),
        ("calibrate: {bits: '4'}\n", "must be an int"),
    ],
)
def test_run_recipe_shapes_are_one_line(recipe, said, tmp_path, llava_dir):
    (tmp_path / "recipe.yaml").write_text(recipe)
    code, out = _cli(
        "run", "--run-dir", tmp_path / "r", "--model", llava_dir, "--config", tmp_path / "recipe.yaml"
    )
    assert code == 2 and said in out and "unexpected" not in out


def test_device_cuda_colon_without_an_index_is_one_line(tmp_path, llava_dir, corpus):
    code, out = _cli(
        "calibrate", "--run-dir", tmp_path / "r", "--model", llava_dir, "--text", corpus, "--device", "cuda:"
    )
    assert code == 2 and "invalid --device cuda:" in out


def test_a_cpu_kernel_path_typo_is_one_line(folded_run, library, monkeypatch):
    from qslaw_pipe.exports.onnx.runtime import OrtVlm

    run, _ = folded_run
    monkeypatch.setenv("QSLAW_ORT_OPS", str(library))
    out = ex.run(ex.export_config(int4_op="custom"), run).artifact.path
    monkeypatch.setenv("QSLAW_CPU_ISA", "avx521")
    with pytest.raises(QslawError, match=r"\$QSLAW_CPU_ISA=avx521 names no CPU kernel path"):
        OrtVlm(out, device="cpu")


# ---- --nproc: one line, once, the right exit status ----


def test_bad_input_under_nproc_is_one_line_once_with_exit_2(llava_dir, corpus, tmp_path):
    args = ["calibrate", "--run-dir", str(tmp_path / "r"), "--model", str(llava_dir), "--text", str(corpus)]
    args += ["--method", "rtn", "--group-size", "32", "--rule", "re:nothing_so_named=skip", "--nproc", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QSLAW_DIST_TIMEOUT": "30"}
    res = subprocess.run([sys.executable, "-m", "qslaw_pipe", *args], capture_output=True, text=True, env=env)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(lines) == 1 and "matches no Linear layer" in lines[0]
    assert "Traceback" not in res.stderr and "ChildFailedError" not in res.stderr
