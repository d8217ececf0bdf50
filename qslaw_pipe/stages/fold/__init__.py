"""Stage `fold`: the learned scales folded into packed int-k codes, exactly.

config.py   FoldConfig
stage.py    fold_layer (one Linear's codes, checked bit for bit), run(cfg, run_dir) -> R/fold/
command.py  `qslaw-pipe fold`
"""

from qslaw_pipe.lazy import lazy_exports

__getattr__ = lazy_exports(
    __name__, {"FoldConfig": "config", "command": "command", "fold_layer": "stage", "run": "stage"}
)
__all__ = ["FoldConfig", "command", "fold_layer", "run"]
