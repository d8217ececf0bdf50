"""Data-parallel stages under torchrun: the process group, which rank does what, and what ranks agree on.

torchrun (torch.distributed.run) starts N processes and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; without them a stage runs as one process and every function here is a no-op. The backend is
gloo on the CPU and NCCL on CUDA (each rank on cuda:LOCAL_RANK). A collective that waits longer than
QSLAW_DIST_TIMEOUT seconds (default 60) raises instead of hanging, so a rank that died or diverged turns
into an error on the others. The start and end of a stage (hashing inputs, sealing the artifact: minutes on
a large model) talk over a separate gloo group that waits up to an hour.

Roles: rank 0 owns the run directory (lock, partial directory, checkpoints, the sealed artifact); the other
ranks compute and write nothing. `run_ranked` is the stage contract for that split.
"""

import datetime
import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from qslaw_pipe.errors import QslawError

TIMEOUT_ENV = "QSLAW_DIST_TIMEOUT"
CONTROL_TIMEOUT_S = 3600
_control = None  # the slow gloo group for objects exchanged outside the training steps


def launched() -> bool:
    """True in a process torchrun started with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def timeout_s() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "60"))


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group when launched by it; returns this rank's device (cuda:LOCAL_RANK)."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    global _control
    if not active():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=timeout_s())
        )
        _control = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=CONTROL_TIMEOUT_S))
    return device


def agree(what: str, value, fix: str) -> None:
    """Every rank holds the same `value`, or every rank raises one QslawError naming the ranks that differ."""
    if not active():
        return
    values: list = [None] * world()
    dist.all_gather_object(values, value, group=_control)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise QslawError(f"ranks {', '.join(map(str, odd))} loaded a different {what} than rank 0", fix)


def from_main(obj):
    """Rank 0's `obj` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def sum_all(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (for logging global losses)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def sum_grads(params: list[torch.Tensor]) -> None:
    """Every rank's gradients of `params` summed into each rank's .grad, in one collective (a missing
    gradient counts as zero: a rank whose share did not reach a tensor still takes part)."""
    if not active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    for p, chunk in zip(params, flat.split([g.numel() for g in grads]), strict=True):
        p.grad = chunk.view_as(p).clone()


def barrier() -> None:
    """Wait for every rank (over the slow group: the end of a stage)."""
    if active():
        dist.barrier(group=_control)


COMM_FAILURES = ("gloo", "NCCL", "nccl", "Connection", "connection", "Timed out", "timed out")


def comm_failure(error: BaseException) -> bool:
    """A collective's failure (a peer died, diverged or timed out): gloo raises plain RuntimeErrors."""
    return active() and (isinstance(error, dist.DistError) or any(s in str(error) for s in COMM_FAILURES))


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 shard (a collective: every rank calls it, in the same order)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A whole tensor laid out as `param` is: this rank's shard when `param` is an FSDP2 DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and value.shape == param.shape:
        return distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    return value


def lost_peers(error: Exception, where: str) -> QslawError:
    """The one-line error for a collective that failed: another process died, diverged or timed out."""
    first = str(error).strip().splitlines()[0][:160]
    return QslawError(
        f"process {rank()} of {world()} lost its peers at {where} ({first})",
        "see the other processes' messages, then rerun the same command: it resumes from the last checkpoint",
    )


def shard(items: list, r: int | None = None, n: int | None = None) -> list:
    """Rank r's share of a global batch: items r, r + n, r + 2n, ..."""
    r, n = rank() if r is None else r, world() if n is None else n
    return items[r::n]


def run_ranked(stage_call: Callable, work: Callable[[Path, bool, dict], dict]):
    """Run a stage on every rank: rank 0 calls `stage_call(work0)` (the run-directory contract: reuse,
    resume, seal), which hands the others the partial directory it works in and the upstream artifacts it
    verified; they run `work` there and write nothing. Returns rank 0's StageResult on rank 0 and None
    elsewhere. Single-process: stage_call(work)."""
    if not active():
        return stage_call(work)
    from qslaw_pipe.pipeline.artifact import Artifact

    if is_main():
        told = []

        def work0(out: Path, resuming: bool, upstream: dict) -> dict:
            shared = {k: {"path": str(a.path), "manifest": a.manifest} for k, a in upstream.items()}
            told.append(from_main({"out": str(out), "resuming": resuming, "upstream": shared}))
            return work(out, resuming, upstream)

        try:
            result = stage_call(work0)
        except QslawError as e:
            if not told:
                from_main({"error": e.problem, "fix": e.fix})
            raise
        if told:
            barrier()  # the others finished their share before rank 0 reports the artifact
        else:
            from_main({"reused": True})
        return result
    msg = from_main(None)
    if "error" in msg:
        raise QslawError(f"rank 0 stopped: {msg['error']}", msg["fix"])
    if "out" in msg:
        upstream = {k: Artifact(Path(v["path"]), v["manifest"]) for k, v in msg["upstream"].items()}
        work(Path(msg["out"]), msg["resuming"], upstream)
        barrier()
    return None
