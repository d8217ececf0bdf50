"""Stage `tune`: QSLAW scale learning (+ projector) with multimodal warmup, and its baselines.

config.py        TuneConfig (every flag and recipe key)
qslaw_linear.py  QslawLinear: a frozen int-k Linear whose parameter is the per-group scale
methods.py       what qslaw / frozen / fp / qlora train, on one model
batches.py       per-step batches (warmup, then multimodal:text mixing), a pure function of (seed, step)
loss.py          next-token loss on scored positions only
loop.py          AdamW, schedule, checkpoints: the loop every method shares
checkpoint.py    resume state (trainable tensors, optimizer, scheduler, RNG, metric rows)
plot.py          loss.png
stage.py         run(cfg, run_dir, model_dir, text) -> R/tune/
command.py       `qslaw-pipe tune`
"""

from qslaw_pipe.stages.tune import align
from qslaw_pipe.stages.tune.command import command
from qslaw_pipe.stages.tune.config import DEFAULT_LR, TuneConfig
from qslaw_pipe.stages.tune.stage import run

__all__ = ["DEFAULT_LR", "TuneConfig", "align", "command", "run"]
