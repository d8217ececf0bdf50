"""`tune`'s settings: one frozen dataclass, validated on construction (flags and recipes build it)."""

import math
from dataclasses import dataclass
from typing import ClassVar

from qslaw_pipe.errors import QslawError
from qslaw_pipe.pipeline.methods import METHODS
from qslaw_pipe.pipeline.placement import check_placement

BACKWARD_WEIGHTS = ("auto", "keep", "rebuild")
TEXT_DATA = "text"  # --data text: the scales learn on the text corpus alone (text-only LMs)
DEFAULT_LR = {name: m.lm_lr for name, m in METHODS.items()}


def parse_mix(ratio: str) -> tuple[int, int]:
    """'1:1' -> (1, 1): multimodal parts to text parts."""
    try:
        mm, text = (int(p) for p in ratio.split(":"))
    except ValueError as e:
        raise QslawError(f"invalid --mix-ratio '{ratio}'", "write MM:TEXT with integers, e.g. 1:1") from e
    if mm <= 0 or text < 0:
        raise QslawError(f"invalid --mix-ratio '{ratio}'", "MM must be positive and TEXT non-negative")
    return mm, text


@dataclass(frozen=True)
class TuneConfig:
    """lm_lr: scales (qslaw), LM weights (fp) or LoRA (qlora); None takes the method's default.
    data: a multimodal set (easyvqa, a ScienceQA directory, LLaVA JSON) mixed with the text corpus after
    the warmup, or `text` (the corpus alone: how a text-only LM tunes)."""

    PLACEMENT: ClassVar[tuple[str, ...]] = (
        "device",
        "compile",
        "grad_checkpoint",
        "backward_weights",
        "shard",
    )

    method: str = "qslaw"
    data: str = "easyvqa"
    steps: int = 200
    batch_size: int = 4
    warmup_steps: int = 40
    mix_ratio: str = "1:1"
    projector_lr: float = 2e-3
    lm_lr: float | None = None
    weight_decay: float = 0.0
    text_seqlen: int = 96
    lora_rank: int = 16
    lora_alpha: int = 32
    checkpoint_every: int = 50
    seed: int = 0
    compile: bool = True
    grad_checkpoint: bool = False
    backward_weights: str = "auto"
    shard: bool = False
    image_folder: str | None = None
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self):
        check_placement(self.device, self.dtype)
        if self.method not in METHODS:
            raise QslawError(f"invalid --method {self.method}", f"use one of {', '.join(METHODS)}")
        if self.steps < 1 or self.batch_size < 2 or self.warmup_steps < 0 or self.checkpoint_every < 1:
            raise QslawError(
                "invalid --steps/--batch-size/--warmup-steps/--checkpoint-every",
                "steps >= 1, batch size >= 2, warmup >= 0, checkpoint-every >= 1",
            )
        lrs = [self.projector_lr, self.weight_decay] + ([] if self.lm_lr is None else [self.lm_lr])
        if not all(math.isfinite(x) for x in lrs) or not 0 < self.projector_lr <= 1 or self.text_seqlen < 8:
            raise QslawError(
                f"invalid --projector-lr {self.projector_lr} / --text-seqlen {self.text_seqlen}",
                "use a finite learning rate in (0, 1] and text-seqlen >= 8",
            )
        if (self.lm_lr is not None and not 0 <= self.lm_lr <= 1) or not 0 <= self.weight_decay <= 1:
            raise QslawError(
                f"invalid --lm-lr {self.lm_lr} / --weight-decay {self.weight_decay}",
                "use finite values in [0, 1]",
            )
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise QslawError(
                f"invalid --lora-rank {self.lora_rank} / --lora-alpha {self.lora_alpha}",
                "use a rank of 1 or more and a positive alpha",
            )
        parse_mix(self.mix_ratio)
        if self.backward_weights not in BACKWARD_WEIGHTS:
            raise QslawError(
                f"invalid --backward-weights {self.backward_weights}",
                f"use one of {', '.join(BACKWARD_WEIGHTS)}",
            )

    @property
    def keep_weights(self) -> bool | None:
        """QslawLinear's keep: None (auto) decides by device."""
        return None if self.backward_weights == "auto" else self.backward_weights == "keep"

    @property
    def resolved_lm_lr(self) -> float:
        return DEFAULT_LR[self.method] if self.lm_lr is None else self.lm_lr
