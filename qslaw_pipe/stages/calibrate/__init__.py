"""Stage `calibrate`: int-k qparams of the language model, by a calibrator (calibrators.py).

calibrators.py  the calibrators' registry (one row each)
omniquant.py    OmniQuant: learnable weight clipping, block by block, resumable per block (the block loop)
signround.py    SignRound: learned rounding and range by sign gradient descent, on omniquant.py's loop
qvlm.py         Q-VLM: the same on blocks of layers cut where the input entropy is high
rtn.py          min-max round-to-nearest
checkpoint.py   a peer's quantized checkpoint as the calibration (--from-checkpoint), through imports/
imports/        GPTQ, AWQ, AutoRound and compressed-tensors checkpoints read exactly into our layout
plot.py         entropy.png (qvlm)
config.py       CalibrateConfig (every flag and recipe key)
batches.py      calibration sequences: WikiText chunks, or chunks led by an image sample (hybrid)
capture.py      what the first decoder block receives; one block run on cached inputs
stage.py        run(cfg, run_dir, model_dir, text) -> R/calibrate/
command.py      `qslaw-pipe calibrate`
"""

from qslaw_pipe.lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"command": "command", "CalibrateConfig": "config", "run": "stage"})
__all__ = ["CalibrateConfig", "command", "run"]
