"""`fold`'s settings (flags and recipes build them)."""

from dataclasses import dataclass
from typing import ClassVar

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.placement import check_device

SOURCES = ("auto", "calibrate")


@dataclass(frozen=True)
class FoldConfig:
    """source: 'auto' folds R/tune when present, else R/calibrate; 'calibrate' ignores R/tune."""

    PLACEMENT: ClassVar[tuple[str, ...]] = ("device",)

    source: str = "auto"
    device: str = "auto"

    def __post_init__(self):
        check_device(self.device)
        if self.source not in SOURCES:
            raise QslawError(f"invalid --source {self.source}", "use auto or calibrate")
