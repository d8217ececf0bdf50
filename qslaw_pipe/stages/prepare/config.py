"""`prepare`'s settings (flags and recipes build them)."""

from dataclasses import dataclass

from qslaw_pipe.errors import QslawError


@dataclass(frozen=True)
class PrepareConfig:
    """align: load the aligned projector that ships with the package (stage 1, `qslaw-pipe align --ship`);
    off, the projector is freshly initialised from `seed` (the base model alignment starts from)."""

    image_size: int = 84
    seed: int = 0
    align: bool = True

    def __post_init__(self):
        if self.image_size % 14 or not 28 <= self.image_size <= 518:
            raise QslawError(
                f"--image-size {self.image_size} is not a multiple of 14 in [28, 518]",
                "try 84 (36 image tokens)",
            )
