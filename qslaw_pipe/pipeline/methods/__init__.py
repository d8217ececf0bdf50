"""Tuning methods: one row each in METHODS, one implementation file each, shared by tune (the trainable
form), eval (a tuned run rebuilt for inference) and fold (which folds a quantized method's scales).

    scaled.py   qslaw, frozen: QslawLinear, the calibrated int-k Linear with per-group scales (eq. 7-8)
    full.py     fp, projector: the full-precision LM, trained whole or frozen
    qlora.py    qlora: NF4 Linears (bitsandbytes) with LoRA adapters (peft)

An implementation module has `prepare(model, method, names, calibration, options)` (turn a loaded model into
the method's trainable form, in place) and `restore(model, method, tuned, calibration, tune_config, dtype)`
(turn a loaded base model into the tuned one, in place). A new method is one file here and one row below;
this table imports nothing heavy (the CLI builds --method's choices and help from it).
"""

from dataclasses import dataclass

from qslaw_pipe.registry import Entry, lookup, table


@dataclass(frozen=True)
class Method(Entry):
    """name: --method's value; help: one line for --help; module: the implementation; quantized: trains on
    the calibrated int-k LM (needs calibrate; fold folds its scales); full_precision: the frozen LM stays fp32
    whatever --dtype; lm_lr: the default learning rate of its LM-side tensors; on_device: eval rebuilds it on
    the compute device (its quantizer packs where the weights are), not on the CPU."""

    quantized: bool = False
    full_precision: bool = False
    lm_lr: float = 0.0
    on_device: bool = False


_HERE = __name__
METHODS: dict[str, Method] = table(
    Method(
        "qslaw",
        "learn one scale per weight group of the int-k LM, and the projector (QSLAW)",
        f"{_HERE}.scaled",
        quantized=True,
        lm_lr=5e-3,
    ),
    Method(
        "fp",
        "the full-precision LM (all its weights) and the projector, as LLaVA fine-tunes",
        f"{_HERE}.full",
        full_precision=True,
        lm_lr=2e-5,
    ),
    Method(
        "qlora",
        "LoRA on the LM's Linears in NF4 (bitsandbytes), and the projector (QLoRA)",
        f"{_HERE}.qlora",
        lm_lr=2e-4,
    ),
    Method(
        "frozen",
        "the projector alone on the int-k LM, scales fixed at 1",
        f"{_HERE}.scaled",
        quantized=True,
    ),
    Method(
        "projector",
        "the projector alone on the full-precision LM (LLaVA's stage-1 alignment)",
        f"{_HERE}.full",
        full_precision=True,
    ),
)


def method(name: str) -> Method:
    """The registered method called `name`, or one line naming the valid ones."""
    return lookup(METHODS, name, "--method")
