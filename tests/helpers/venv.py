"""A side virtual environment with optimum-onnx (which pins transformers < 4.58), for one interop test.

It is made over the site-packages of the interpreter running the tests (a `.pth` file), not the base
interpreter's: from a project venv it sees that venv's torch and onnxruntime, so pip never downloads a
second torch. One per running interpreter, cached under the qslaw-pipe cache directory.
"""

import hashlib
import site
import subprocess
import sys
from pathlib import Path

from qslaw_pipe.paths import cache_root

PACKAGES = ("transformers<4.58", "optimum-onnx")
PROBE = "import optimum.onnxruntime, transformers; assert transformers.__version__ < '4.58'"


def _site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def optimum_venv() -> Path | None:
    """The side venv's python (built on first use); None when pip cannot make it (no package index)."""
    key = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    venv = cache_root() / f"venv-optimum-{key}"
    python = venv / "bin" / "python"
    if python.is_file() and subprocess.run([str(python), "-c", PROBE], capture_output=True).returncode == 0:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        Path(purelib, "outer-site.pth").write_text("\n".join(_site_dirs()) + "\n")
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PACKAGES],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return python if subprocess.run([str(python), "-c", PROBE], capture_output=True).returncode == 0 else None
