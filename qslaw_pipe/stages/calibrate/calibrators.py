"""Calibrators: one row each in CALIBRATORS, one implementation file each. A calibrator module has
`calibrate(lm, targets, group_sizes, cfg, text_path, out, bar, compute) -> (Calibration, metrics)`: the typed
record the artifact holds (pipeline/qparams.py: qparams per layer, any per-layer extras, and adjusted weights
if it changes what the codes round from) and what it measured. It may write files of its own into `out`
(qvlm: entropy.png) and resume from `out/resume`. A new calibrator is one file here and one row below; this
table imports nothing heavy (the CLI builds --method's choices and help from it)."""

from dataclasses import dataclass

from qslaw_pipe.registry import Entry, lookup, table


@dataclass(frozen=True)
class Calibrator(Entry):
    """name: --method's value; help: one line for --help; module: the implementation; samples: it reads
    calibration samples (so --nsamples must cover the processes under --nproc); lr: its learning rate when
    --lr is unset (None: 1 / the steps per block); checkpoint: it reads --from-checkpoint, not samples."""

    samples: bool = True
    lr: float | None = 0.5
    checkpoint: bool = False


_HERE = __name__.rsplit(".", 1)[0]
CALIBRATORS: dict[str, Calibrator] = table(
    Calibrator(
        "omniquant",
        "learned weight clipping, one decoder layer at a time (OmniQuant)",
        f"{_HERE}.omniquant",
    ),
    Calibrator(
        "qvlm",
        "the same on blocks of consecutive layers cut where the input entropy is high (Q-VLM)",
        f"{_HERE}.qvlm",
    ),
    Calibrator(
        "signround",
        "learned rounding offsets and range scales by sign gradient descent, one decoder layer at a time "
        "(SignRound / AutoRound); the artifact keeps the weights its codes round from",
        f"{_HERE}.signround",
        lr=None,
    ),
    Calibrator("rtn", "min-max round-to-nearest (no samples)", f"{_HERE}.rtn", samples=False),
    Calibrator(
        "checkpoint",
        "a GPTQ, AWQ, AutoRound or compressed-tensors checkpoint's codes and scales, exactly (--from-checkpoint)",
        f"{_HERE}.checkpoint",
        samples=False,
        checkpoint=True,
    ),
)


def importer_name() -> str:
    """The calibrator --from-checkpoint implies."""
    return next(c.name for c in CALIBRATORS.values() if c.checkpoint)


def calibrator(name: str) -> Calibrator:
    return lookup(CALIBRATORS, name, "--method")
