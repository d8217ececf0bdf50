"""A model directory laid out as the Hugging Face hub cache holds it."""

import shutil
from pathlib import Path

from qslaw_pipe.pipeline.hashing import sha256_file


def hub_snapshot(model: Path, cache: Path, revision: str = "0123abcd") -> Path:
    """`model`'s files as blobs named by their sha256 under <repo>/blobs, and a snapshot of relative links to
    them under <repo>/snapshots/<revision> (the directory users pass as the model)."""
    repo = cache / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in model.iterdir():
        blob = repo / "blobs" / sha256_file(f)
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(Path("../..") / "blobs" / blob.name)
    return snapshot
