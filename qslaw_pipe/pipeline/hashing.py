"""sha256 of files and directories, for the manifests' record of every input and output.

A file's hash is remembered for the process, keyed by its path, size, mtime and inode, so a chain of
artifacts that all name one model directory hashes it once."""

import hashlib
from pathlib import Path

from qslaw_pipe.errors import QslawError

_CHUNK = 1 << 20
_MEMO: dict[tuple, str] = {}


def sha256_file(path: Path) -> str:
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def files_of(directory: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    """Every regular file below `directory`, sorted, symlinks not followed, top-level names in `skip` left out."""
    directory = Path(directory)
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not p.is_symlink() and p.relative_to(directory).parts[0] not in skip
    )


def tree_root(directory: Path) -> Path:
    """How far a directory's symlinks may reach: the directory itself, or, for a Hugging Face hub snapshot
    (<repo>/snapshots/<revision>/, whose files link to <repo>/blobs/), its repository."""
    directory = Path(directory).resolve()
    repo = directory.parent.parent
    if directory.parent.name == "snapshots" and (repo / "blobs").is_dir():
        return repo
    return directory


def linked_files(directory: Path, skip: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """(name relative to `directory`, the file it is) for every file below it, sorted by name, symlinks followed
    where they stay inside tree_root; one leaving it is refused with one line, since its content would be
    read, hashed or copied from outside what the directory holds."""
    directory = Path(directory)
    root = tree_root(directory)
    out = []
    for p in sorted(directory.rglob("*")):
        name = str(p.relative_to(directory))
        if p.relative_to(directory).parts[0] in skip or not p.is_file():
            continue
        target = p.resolve()
        if p.is_symlink() and not target.is_relative_to(root):
            raise QslawError(
                f"{p} is a link out of {root} (to {target})",
                "copy the file into the directory, or pass the directory it lives in",
            )
        out.append((name, target))
    return out


def sha256_path(path: Path) -> str:
    """Hash of a file, or of a directory: every file's relative path and content, in sorted order (symlinks
    followed within the directory's tree, as a hub-cache snapshot's are)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for name, f in linked_files(path):
        h.update(name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
