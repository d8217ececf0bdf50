"""One writer per stage and run directory: an OS file lock (flock) taken before the partial directory is
touched. A second process gets one line naming the holder's PID and never touches the first one's files.
The kernel drops the lock when its holder dies (even by kill -9), so a crash never leaves it stuck."""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from qslaw_pipe.errors import QslawError


@contextlib.contextmanager
def stage_lock(run_dir: Path, stage: str) -> Iterator[None]:
    path = Path(run_dir) / f".{stage}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise QslawError(
                f"another qslaw-pipe process (pid {holder}) is writing {Path(run_dir) / stage}",
                "wait for it to finish, or use another --run-dir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
