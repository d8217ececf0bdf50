"""Finding and registering our onnxruntime custom-op library (ai.qslaw ops) for `--int4-op custom` graphs."""

import os
from pathlib import Path

from qslaw_pipe.pipeline.errors import QslawError

LIBRARY_ENV = "QSLAW_ORT_OPS"
LIBRARY_NAME = "libqslaw_ort_ops.so"


def library_path() -> Path | None:
    """$QSLAW_ORT_OPS, else the library `python -m qslaw_pipe.kernels.build` wrote into kernels/lib/."""
    candidates = [Path(os.environ[LIBRARY_ENV])] if os.environ.get(LIBRARY_ENV) else []
    candidates.append(Path(__file__).resolve().parents[1] / "kernels" / "lib" / LIBRARY_NAME)
    return next((p for p in candidates if p.is_file()), None)


def register_library(options) -> Path:
    path = library_path()
    if path is None:
        raise QslawError(
            "this graph uses ai.qslaw int4 ops but their onnxruntime library is not built",
            f"build it with `python -m qslaw_pipe.kernels.build`, or set ${LIBRARY_ENV} to {LIBRARY_NAME}",
        )
    options.register_custom_ops_library(str(path))
    return path
