"""Build the ai.qslaw onnxruntime custom-op library: `python -m qslaw_pipe.kernels.build`.

Headers: $ORT_INCLUDE_DIR, else Debian's libonnxruntime-dev (trixie) fetched with apt into a private
directory ($ORT_HEADERS_CACHE, default kernels/lib/ort-headers: its own sources list, state and cache
dirs; the system's apt configuration is not touched) and unpacked there. The CPU kernels always build;
the CUDA kernels (csrc/int4_cuda.cu) only when nvcc is on PATH. Output:
qslaw_pipe/kernels/lib/libqslaw_ort_ops.so, or $QSLAW_ORT_OPS (what `library_path` finds for the runtime).
Like all of kernels/, this module imports nothing else of the package.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
BUILD = HERE / "lib"
LIBRARY_NAME = "libqslaw_ort_ops.so"
LIBRARY = BUILD / LIBRARY_NAME
LIBRARY_ENV = "QSLAW_ORT_OPS"


class BuildError(Exception):
    """A build failure: one line naming the problem, then the fix."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")


def library_path() -> Path | None:
    """$QSLAW_ORT_OPS, else the library `python -m qslaw_pipe.kernels.build` wrote; None when neither exists."""
    candidates = [Path(os.environ[LIBRARY_ENV])] if os.environ.get(LIBRARY_ENV) else []
    candidates.append(LIBRARY)
    return next((p for p in candidates if p.is_file()), None)


DEBIAN_SUITE = "trixie"
HEADER = "onnxruntime_lite_custom_op.h"


def _apt(root: Path, *args: str) -> None:
    opts = [
        f"-oDir::Etc::sourcelist={root / 'sources.list'}",
        f"-oDir::Etc::sourceparts={root / 'sources.list.d'}",
        f"-oDir::State={root / 'state'}",
        f"-oDir::Cache={root / 'cache'}",
        f"-oDir::Etc::preferencesparts={root / 'prefs.d'}",
        "-oDebug::NoLocking=1",
        "-qq",
    ]
    subprocess.run(["apt-get", *opts, *args], check=True, cwd=root / "debs", capture_output=True, text=True)


def fetch_debian_headers(root: Path) -> Path:
    """Download and unpack libonnxruntime-dev into `root`; returns its include directory."""
    include = root / "usr" / "include" / "onnxruntime"
    if (include / HEADER).is_file():
        return include
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BuildError(
            "onnxruntime headers not found and apt-get/dpkg-deb are missing",
            "set ORT_INCLUDE_DIR to onnxruntime's include dir",
        )
    for d in ("sources.list.d", "state/lists/partial", "cache/archives/partial", "prefs.d", "debs"):
        (root / d).mkdir(parents=True, exist_ok=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (root / "sources.list").write_text(
        f"deb [signed-by={keyring}] http://deb.debian.org/debian {DEBIAN_SUITE} main\n"
    )
    try:
        _apt(root, "update")
        _apt(root, "download", "libonnxruntime-dev")
    except subprocess.CalledProcessError as e:
        raise BuildError(
            f"fetching libonnxruntime-dev from Debian {DEBIAN_SUITE} failed ({e.stderr.strip()[-200:]})",
            "set ORT_INCLUDE_DIR to onnxruntime's include dir",
        ) from e
    deb = next((root / "debs").glob("libonnxruntime-dev_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return include


def include_dir(headers_cache: Path | None = None) -> Path:
    """$ORT_INCLUDE_DIR, else Debian's headers unpacked in `headers_cache` ($ORT_HEADERS_CACHE, kernels/lib/ort-headers)."""
    if os.environ.get("ORT_INCLUDE_DIR"):
        path = Path(os.environ["ORT_INCLUDE_DIR"])
        if not (path / HEADER).is_file():
            raise BuildError(
                f"ORT_INCLUDE_DIR={path} has no {HEADER}", "point it at onnxruntime's include directory"
            )
        return path
    default = os.environ.get("ORT_HEADERS_CACHE") or BUILD / "ort-headers"
    return fetch_debian_headers(Path(headers_cache or default))


def cuda_root() -> Path:
    """$CUDA_HOME / $CUDA_PATH, else the toolkit of the nvcc on PATH (which may be a wrapper script)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var])
    out = subprocess.run(
        ["nvcc", "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True
    ).stderr
    top = next((line.split("TOP=", 1)[1] for line in out.splitlines() if "TOP=" in line), None)
    return Path(top.strip()).resolve() if top else Path(shutil.which("nvcc")).resolve().parents[1]


def compile_cuda(obj: Path) -> Path:
    """nvcc -> object file of csrc/int4_cuda.cu (raises CalledProcessError on a compile error)."""
    cmd = [
        "nvcc",
        "-O3",
        "-std=c++17",
        "-Xcompiler",
        "-fPIC",
        "-c",
        str(CSRC / "int4_cuda.cu"),
        "-o",
        str(obj),
    ]
    subprocess.run(cmd, check=True)
    return obj


# the CPU kernels compiled once per ISA, each file with its own flags; the rest at the x86-64 baseline, so the
# library runs on any x86-64 CPU and picks its path at run time (int4_cpu.h: select_isa)
ISA_FLAGS = {
    "int4_isa_generic.cc": [],
    "int4_isa_avx2.cc": ["-mavx2", "-mfma"],
    "int4_isa_avx512.cc": ["-mavx512f", "-mavx2", "-mfma"],
}
COMMON = ["-O3", "-fPIC", "-std=c++17", "-fvisibility=hidden"]


def _compile(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        sys.stderr.write(res.stderr[-4000:])
        raise BuildError("compiling the custom-op library failed", "check the compiler output above")


def build(out: Path = BUILD, cuda: bool = True, headers_cache: Path | None = None) -> Path:
    """Compile the library into `out` (CUDA kernels too when `cuda` and nvcc exist); returns its path."""
    include = include_dir(headers_cache)
    out.mkdir(parents=True, exist_ok=True)
    objs = [str(compile_cuda(out / "int4_cuda.o"))] if cuda and shutil.which("nvcc") else []
    cxx = os.environ.get("CXX", "g++")
    for src, flags in ISA_FLAGS.items():
        obj = out / src.replace(".cc", ".o")
        _compile([cxx, *COMMON, *flags, f"-I{CSRC}", "-c", str(CSRC / src), "-o", str(obj)])
        objs.insert(0, str(obj))
    cmd = [
        cxx,
        *COMMON,
        "-shared",
        f"-I{include}",
        f"-I{CSRC}",
        str(CSRC / "qslaw_ort_ops.cc"),
        str(CSRC / "int4_cpu.cc"),
        *objs,
        "-o",
        str(out / LIBRARY.name),
    ]
    if cuda and shutil.which("nvcc"):
        cmd[1:1] = ["-DQSLAW_WITH_CUDA"]
        root = cuda_root()
        libs = [root / "lib64", root / "lib", root / "targets" / "x86_64-linux" / "lib"]
        cmd += [f"-L{d}" for d in libs if d.is_dir()] + ["-lcudart"]
    _compile(cmd)
    return out / LIBRARY.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-cuda", action="store_true", help="CPU kernels only, even when nvcc is present.")
    args = ap.parse_args()
    try:
        path = build(cuda=not args.no_cuda)
    except BuildError as e:
        sys.exit(f"error: {e}")
    print(
        f"built {path}"
        + (" (with CUDA kernels)" if shutil.which("nvcc") and not args.no_cuda else " (CPU kernels)")
    )


if __name__ == "__main__":
    main()
