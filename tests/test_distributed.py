"""`tune` and `calibrate` data parallel under torchrun: 2 gloo processes on the CPU, a tiny LLaVA.

The global batch of every step is the single-process one, split over the ranks (a rank may hold only text:
the projector then gets no gradient there); scales and projector end where one process ends them, and
OmniQuant's clipping where one process ends it.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from qslaw_pipe.cli_common import without_nproc
from qslaw_pipe.pipeline.tensors import load_tensors
from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import tune as tn
from tests.tiny import tiny_scienceqa

# batch 2 after warmup: one image sample and one text sample, so rank 1's share is text only
STEPS = ["--steps", "40", "--batch-size", "2", "--warmup-steps", "2", "--text-seqlen", "16"]
FLAGS = [*STEPS, "--checkpoint-every", "2", "--lm-lr", "0.01", "--no-compile"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, llava_dir, corpus):
    sqa = tiny_scienceqa(tmp_path_factory.mktemp("sqa"))
    calibrated = tmp_path_factory.mktemp("run") / "r"
    cal.run(
        cal.CalibrateConfig(method="rtn", bits=4, group_size=32), calibrated, llava_dir, corpus, bar=False
    )
    return sqa, calibrated


def _run_dir(setup, path):
    shutil.copytree(setup[1] / "calibrate", path / "calibrate")
    return path


def _cli(setup, run, llava_dir, corpus, nproc: int, *extra) -> list[str]:
    args = ["tune", "--run-dir", str(run), "--model", str(llava_dir), "--text", str(corpus)]
    args += ["--data", str(setup[0]), *FLAGS, "--device", "cpu", *extra]
    if nproc == 1:
        return [sys.executable, "-m", "qslaw_pipe", *args]
    return [sys.executable, "-m", "qslaw_pipe", *args, "--nproc", str(nproc)]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "QSLAW_DIST_TIMEOUT": "30", **extra}


def _trained(run):
    return load_tensors(run / "tune" / "trainable.safetensors")[0]


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and any(k.endswith(".scale") for k in a)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)


@pytest.fixture(scope="module")
def single(setup, llava_dir, corpus, tmp_path_factory):
    run = _run_dir(setup, tmp_path_factory.mktemp("one") / "r")
    subprocess.run(_cli(setup, run, llava_dir, corpus, 1), check=True, env=_env(), capture_output=True)
    return _trained(run)


def _rank_pid(root: int, rank: int) -> int:
    """The process of `rank` among `root`'s descendants (torchrun sets RANK in each worker's environment)."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        pid, ppid = map(int, line.split())
        children.setdefault(ppid, []).append(pid)
    todo, found = [root], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    for pid in found:
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"LOCAL_RANK=") for e in env):
            return pid
    raise AssertionError(f"no rank {rank} process under {root}")


def _launch(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a tune / calibrate command line to its end (1 thread per process, the test timeout)."""
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _kill_rank_1_after_a_checkpoint(run, cmd: list[str]) -> None:
    """Start `cmd` (2 processes under torchrun), kill -9 rank 1 once a checkpoint exists: the run must stop
    unfinished."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = run / ".tune.partial" / "checkpoint.safetensors"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert checkpoint.exists(), proc.communicate()[0].decode()[-3000:]
    os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
    proc.wait(timeout=120)
    assert proc.returncode != 0 and not (run / "tune").exists()


def test_nproc_is_dropped_from_the_relaunched_command():
    argv = ["tune", "--nproc", "2", "--steps", "3", "--nproc=4"]
    assert without_nproc(argv) == ["tune", "--steps", "3"]


def test_two_processes_train_what_one_does(setup, llava_dir, corpus, tmp_path, single):
    run = _run_dir(setup, tmp_path / "r")
    done = _launch(_cli(setup, run, llava_dir, corpus, 2))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("tune:") <= 1  # rank 0 alone reports
    manifest = (run / "tune" / "manifest.json").read_text()
    assert '"world_size": 2' in manifest
    _assert_same(single, _trained(run))
    # the warmup steps are multimodal only, then each step mixes: one rank's share is text only
    rows = (run / "tune" / "metrics.csv").read_text().splitlines()[1:]
    assert [r.split(",")[2] for r in rows] == ["multimodal"] * 2 + ["mixed"] * 38


def test_a_killed_rank_then_resume_reproduces_the_run(setup, llava_dir, corpus, tmp_path, single):
    """kill -9 of rank 1 after the first checkpoint: torchrun stops; the rerun (one process) resumes."""
    run = _run_dir(setup, tmp_path / "r")
    _kill_rank_1_after_a_checkpoint(run, _cli(setup, run, llava_dir, corpus, 2))
    resumed = _launch(_cli(setup, run, llava_dir, corpus, 1))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(single, _trained(run))


def test_ranks_with_different_models_stop_with_one_line(setup, llava_dir, corpus, tmp_path):
    """Each rank checks the model it loaded against rank 0's before training."""
    other = tmp_path / "other-model"
    shutil.copytree(llava_dir, other)
    (other / "generation_config.json").write_text('{"max_length": 7}')
    run = _run_dir(setup, tmp_path / "r")
    script = tmp_path / "rank_models.py"
    script.write_text(
        "import os, sys\nfrom qslaw_pipe.cli import main\n"
        f"m = {str(llava_dir)!r} if os.environ['RANK'] == '0' else {str(other)!r}\n"
        "sys.argv[sys.argv.index('MODEL')] = m\nmain()\n"
    )
    cmd = _cli(setup, run, "MODEL", corpus, 1)[3:]
    done = _launch(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(script),
            *cmd,
        ]
    )
    assert done.returncode != 0
    assert "loaded a different model than rank 0" in done.stderr
    assert not (run / "tune").exists()


def test_batch_smaller_than_the_world_is_refused(setup, llava_dir, corpus, tmp_path):
    run = _run_dir(setup, tmp_path / "r")
    cmd = _cli(setup, run, llava_dir, corpus, 3, "--batch-size", "2")
    done = _launch(cmd)
    assert done.returncode != 0 and "smaller than the 3 ranks" in done.stderr


def test_single_process_loss_is_unchanged_by_sharding(setup, llava_dir):
    """The per-rank loss shares of a global batch sum to the single-process loss."""
    from qslaw_pipe.pipeline.artifact import read_artifact
    from qslaw_pipe.pipeline.data.sets import load_train_samples
    from qslaw_pipe.stages.tune.batches import StepSampler, collate
    from qslaw_pipe.stages.tune.config import parse_mix
    from qslaw_pipe.stages.tune.loss import batch_loss
    from qslaw_pipe.stages.tune.methods import build_method_model

    lm = build_method_model(llava_dir, "qslaw", read_artifact(setup[1], "calibrate"))
    sampler = StepSampler(
        lm.processor,
        lm.arch,
        load_train_samples(str(setup[0])),
        [torch.arange(3, 19)],
        4,
        0,
        parse_mix("1:1"),
        0,
    )
    whole = sampler.examples(0)
    with torch.no_grad():
        one = batch_loss(lm.model, collate(whole, 0))[0]
        shares = [batch_loss(lm.model, collate(whole[r::2], 0, whole=whole))[0] for r in range(2)]
        three = [batch_loss(lm.model, collate(whole[r::3], 0, whole=whole))[0] for r in range(3)]
    torch.testing.assert_close(sum(shares), one, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sum(three), one, rtol=1e-6, atol=1e-6)
    assert tn.TuneConfig().batch_size >= 2


CALIBRATE = [
    "--method",
    "omniquant",
    "--bits",
    "3",
    "--group-size",
    "32",
    "--nsamples",
    "6",
    "--seqlen",
    "16",
]
CALIBRATE += ["--epochs", "2", "--batch-size", "4", "--device", "cpu"]


def _calibrate(run, llava_dir, corpus, nproc: int, method: str = "omniquant"):
    cmd = [sys.executable, "-m", "qslaw_pipe", "calibrate", "--run-dir", str(run), "--model", str(llava_dir)]
    cmd += ["--text", str(corpus), *CALIBRATE, "--nproc", str(nproc)]
    cmd[cmd.index("omniquant")] = method
    done = _launch(cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_tensors(run / "calibrate" / "qparams.safetensors")[0]


def test_calibrate_in_two_processes_gives_the_single_process_qparams(llava_dir, corpus, tmp_path):
    """6 samples over 2 ranks (minibatches of 4 straddle them): the same clipping, hence the same qparams."""
    one = _calibrate(tmp_path / "one", llava_dir, corpus, 1)
    two = _calibrate(tmp_path / "two", llava_dir, corpus, 2)
    assert one.keys() == two.keys() and any(k.endswith("lwc_upper") for k in one)
    for k in one:
        torch.testing.assert_close(two[k].float(), one[k].float(), rtol=0, atol=1e-5, msg=k)
    assert '"world_size": 2' in (tmp_path / "two" / "calibrate" / "manifest.json").read_text()


def test_signround_in_two_processes_learns_the_single_process_codes(llava_dir, corpus, tmp_path):
    """Sign steps on gradients summed over 2 ranks: a gradient within rounding of 0 may take the other sign, so
    the learned codes (the adjusted weights' codes at scale 1) agree on all but a sliver, not bit for bit."""
    from qslaw_pipe.kernels.quant import quantize_codes

    one = _calibrate(tmp_path / "one", llava_dir, corpus, 1, "signround")
    two = _calibrate(tmp_path / "two", llava_dir, corpus, 2, "signround")
    assert one.keys() == two.keys()
    same = total = 0
    for k in (k.removesuffix(".weight") for k in one if k.endswith(".weight")):
        codes = [
            quantize_codes(t[f"{k}.weight"].float(), t[f"{k}.delta"], t[f"{k}.zero_point"], 3, 32)
            for t in (one, two)
        ]
        same, total = same + int((codes[0] == codes[1]).sum()), total + codes[0].numel()
    assert total and same / total > 0.999, same / total


def test_a_dead_peer_is_an_error_within_the_timeout_not_a_hang(setup, llava_dir, corpus, tmp_path):
    """Two ranks started by hand (no torchrun agent to stop the survivor): kill -9 of rank 1 mid-run makes
    rank 0 fail within QSLAW_DIST_TIMEOUT plus start-up slack."""
    import socket

    run = _run_dir(setup, tmp_path / "r")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = _cli(setup, run, llava_dir, corpus, 1)
    dist = {
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "QSLAW_DIST_TIMEOUT": "10",
    }
    procs = [
        subprocess.Popen(
            cmd,
            env=_env(**dist, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    checkpoint = run / ".tune.partial" / "checkpoint.safetensors"
    deadline = time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and procs[0].poll() is None:
        time.sleep(0.02)
    assert checkpoint.exists()
    procs[1].kill()
    killed = time.time()
    try:
        _, err = procs[0].communicate(timeout=60)
    finally:
        procs[0].kill()
    assert procs[0].returncode != 0 and time.time() - killed < 60, err[-2000:]
    assert "error: process 0 of 2 lost its peers at step" in err and "rerun the same command" in err
    assert not (run / "tune").exists()


def test_sharded_tune_trains_what_one_process_does(setup, llava_dir, corpus, tmp_path, single):
    """--shard (FSDP2): every decoder layer's weights, frozen ones included, split over the ranks."""
    run = _run_dir(setup, tmp_path / "r")
    done = _launch(_cli(setup, run, llava_dir, corpus, 2, "--shard"))
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same(single, _trained(run))


def test_sharded_fp_tune_matches_one_process(setup, llava_dir, corpus, tmp_path):
    """The fp baseline sharded: LM weights within 1e-6, the projector within 1e-4 (AdamW amplifies the
    reduction order's rounding where its gradients are near zero)."""
    extra = ("--method", "fp", "--steps", "6", "--lm-lr", "2e-5")
    runs = {n: _run_dir(setup, tmp_path / f"r{n}") for n in (1, 2)}
    for n, run in runs.items():
        cmd = _cli(setup, run, llava_dir, corpus, n, *extra, *(("--shard",) if n == 2 else ()))
        done = _launch(cmd)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = _trained(runs[1]), _trained(runs[2])
    assert one.keys() == two.keys() and len(one) > 20
    for k in one:
        tol = 1e-4 if "multi_modal_projector" in k else 1e-6
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=tol, msg=k)


def test_sharded_run_killed_then_resumed_sharded_reproduces_the_run(
    setup, llava_dir, corpus, tmp_path, single
):
    run = _run_dir(setup, tmp_path / "r")
    _kill_rank_1_after_a_checkpoint(run, _cli(setup, run, llava_dir, corpus, 2, "--shard"))
    resumed = _launch(_cli(setup, run, llava_dir, corpus, 2, "--shard"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(single, _trained(run))


def test_shard_needs_several_processes(setup, llava_dir, corpus, tmp_path):
    run = _run_dir(setup, tmp_path / "r")
    done = _launch(_cli(setup, run, llava_dir, corpus, 1, "--shard"))
    assert done.returncode != 0 and "--shard splits the model over processes" in done.stderr
