"""Stage `tune`: QSLAW scale learning (+ projector) with multimodal warmup, and its baselines.

config.py        TuneConfig (every flag and recipe key)
methods.py       a loaded model turned into a method's trainable form (the methods: pipeline/methods/)
batches.py       per-step batches (warmup, then multimodal:text mixing), a pure function of (seed, step)
loss.py          next-token loss on scored positions only
loop.py          AdamW, schedule, checkpoints: the loop every method shares
checkpoint.py    resume state (trainable tensors, optimizer, scheduler, RNG, metric rows)
plot.py          loss.png
stage.py         run(cfg, run_dir, model_dir, text) -> R/tune/
command.py       `qslaw-pipe tune`
align.py         `qslaw-pipe align`: stage-1 alignment (the projector method), --ship
"""

from qslaw_pipe.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {"align": "align", "command": "command", "DEFAULT_LR": "config", "TuneConfig": "config", "run": "stage"},
)
__all__ = ["DEFAULT_LR", "TuneConfig", "align", "command", "run"]
