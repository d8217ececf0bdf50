"""`calibrate`'s settings: one frozen dataclass, validated on construction (flags and recipes build it)."""

import math
from dataclasses import dataclass, field
from typing import ClassVar

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.placement import check_placement
from qslaw_pipe.pipeline.targeting import parse_rule
from qslaw_pipe.stages.calibrate.calibrators import CALIBRATORS

BITS = (2, 3, 4, 8)
GROUPS = (32, 64, 128, -1)
CALIBS = ("text", "hybrid")


@dataclass(frozen=True)
class CalibrateConfig:
    """group_size -1 means per-channel (one group spanning all inputs); lr None: the calibrator's own rate
    (its row in calibrators.py; signround: 1 / its steps per block)."""

    PLACEMENT: ClassVar[tuple[str, ...]] = (
        "device",
        "from_checkpoint",
    )  # the checkpoint: an input, by content

    bits: int = 4
    group_size: int = 128
    method: str = "omniquant"
    calib: str = "text"
    nsamples: int = 32
    seqlen: int = 512
    epochs: int = 3
    lr: float | None = None
    batch_size: int = 4
    max_block: int = 3
    entropy_quantile: float = 0.5
    seed: int = 0
    rules: tuple[str, ...] = field(default_factory=tuple)
    device: str = "auto"
    dtype: str = "auto"
    from_checkpoint: str | None = None

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.method in CALIBRATORS and self.lr is None:
            steps = max(self.epochs * math.ceil(self.nsamples / max(self.batch_size, 1)), 1)
            default = CALIBRATORS[self.method].lr
            object.__setattr__(self, "lr", float(default if default is not None else 1 / steps))
        checks = [
            (self.bits in BITS, f"--bits {self.bits}", f"use one of {BITS}"),
            (self.group_size in GROUPS, f"--group-size {self.group_size}", "use 32, 64, 128 or per-channel"),
            (self.method in CALIBRATORS, f"--method {self.method}", f"use one of {', '.join(CALIBRATORS)}"),
            (self.calib in CALIBS, f"--calib {self.calib}", f"use one of {CALIBS}"),
            (
                self.nsamples > 0 and self.seqlen > 1 and self.epochs >= 0,
                "--nsamples/--seqlen/--epochs",
                "use positive values",
            ),
            (
                self.lr is None or (math.isfinite(self.lr) and 0 < self.lr <= 10 and self.batch_size > 0),
                f"--lr {self.lr} / --batch-size {self.batch_size}",
                "use a finite learning rate in (0, 10] and a positive batch size",
            ),
        ]
        checks.append(
            (
                self.max_block >= 1 and 0 <= self.entropy_quantile <= 1,
                f"--max-block {self.max_block} / --entropy-quantile {self.entropy_quantile}",
                "use a block budget of at least 1 layer and a quantile in [0, 1]",
            )
        )
        checks.append(
            (
                self.method not in CALIBRATORS
                or CALIBRATORS[self.method].checkpoint == (self.from_checkpoint is not None),
                f"--method {self.method} with{'out' if self.from_checkpoint is None else ''} --from-checkpoint",
                "pass --from-checkpoint DIR (it implies --method checkpoint), or another --method without it",
            )
        )
        for ok, what, fix in checks:
            if not ok:
                raise QslawError(f"invalid {what}", fix)
        for rule in self.rules:
            parse_rule(rule)


def layer_group_size(cfg: CalibrateConfig, in_features: int) -> int:
    return in_features if cfg.group_size == -1 else cfg.group_size
