"""The evaluation commands' settings (flags and recipes build them): generate, eval mcq, eval ppl."""

from dataclasses import dataclass
from typing import ClassVar

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.placement import check_placement


@dataclass(frozen=True)
class GenerateConfig:
    """temperature 0 decodes greedily."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.max_new_tokens < 1 or self.temperature < 0:
            raise QslawError(
                "invalid --max-new-tokens/--temperature", "use max-new-tokens >= 1, temperature >= 0"
            )


@dataclass(frozen=True)
class McqConfig:
    """limit: questions scored (a seeded random subset; 0 = all). onnx: score that export directory
    (written by `export --format onnx`) in onnxruntime instead of the PyTorch model."""

    PLACEMENT: ClassVar[tuple[str, ...]] = ("device", "onnx")

    data: str = "easyvqa"
    split: str = "test"
    limit: int = 500
    batch_size: int = 16
    max_new_tokens: int = 4
    seed: int = 0
    onnx: str | None = None
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.limit < 0 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise QslawError(
                "invalid --limit/--batch-size/--max-new-tokens", "use limit >= 0 and positive sizes"
            )


@dataclass(frozen=True)
class PplConfig:
    PLACEMENT: ClassVar[tuple[str, ...]] = ("device",)

    seqlen: int = 512
    windows: int = 32
    batch_size: int = 4
    act_bits: int = 16
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.seqlen < 2 or self.windows < 1 or self.batch_size < 1:
            raise QslawError("invalid --seqlen/--windows/--batch-size", "use positive values (seqlen >= 2)")
        if not 2 <= self.act_bits <= 16:
            raise QslawError(
                f"invalid --act-bits {self.act_bits}", "use 2 to 16 (16: activations not quantized)"
            )
