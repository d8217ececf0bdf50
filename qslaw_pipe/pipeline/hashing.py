"""sha256 of files and directories, for the manifests' record of every input and output.

A file's hash is remembered for the process, keyed by its path, size, mtime and inode, so a chain of
artifacts that all name one model directory hashes it once."""

import hashlib
from pathlib import Path

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


def sha256_path(path: Path) -> str:
    """Hash of a file, or of a directory: every file's relative path and content, in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for f in files_of(path):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()
