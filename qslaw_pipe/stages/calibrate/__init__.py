"""Stage `calibrate`: int-k qparams of the language model (OmniQuant, or RTN).

config.py     CalibrateConfig (every flag and recipe key)
batches.py    calibration sequences: WikiText chunks, or chunks led by an image sample (hybrid)
capture.py    what the first decoder block receives; one block run on cached inputs
omniquant.py  learnable weight clipping, block by block, resumable per block
stage.py      run(cfg, run_dir, model_dir, text) -> R/calibrate/
command.py    `qslaw-pipe calibrate`
"""

from qslaw_pipe.stages.calibrate.command import command
from qslaw_pipe.stages.calibrate.config import CalibrateConfig
from qslaw_pipe.stages.calibrate.stage import run

__all__ = ["CalibrateConfig", "command", "run"]
