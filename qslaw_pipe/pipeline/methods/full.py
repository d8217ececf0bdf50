"""fp and projector: the full-precision LM. fp trains all of its weights (as LLaVA fine-tunes), projector
none of them (LLaVA's stage-1 alignment, `qslaw-pipe align`); both train the projector."""

from qslaw_pipe.pipeline import modules
from qslaw_pipe.pipeline.tuned import load_parameters


def prepare(model, method, names, calibration, options) -> None:
    if method.name == "fp":
        modules.decoder(model).requires_grad_(True)
        model.get_output_embeddings().requires_grad_(True)


def restore(model, method, tuned, calibration, tune_config: dict, compute_dtype) -> None:
    load_parameters(model, tuned.tensors)
