"""Round-to-nearest: min-max qparams per group of each targeted Linear, no calibration samples."""

from qslaw_pipe.kernels.quant import rtn_qparams
from qslaw_pipe.pipeline.qparams import Calibration, LayerQParams


def calibrate(lm, targets, group_sizes, cfg, text_path, out, bar=True, compute=None):
    layers = {}
    for t in targets:
        delta, zp = rtn_qparams(lm.model.get_submodule(t).weight.detach(), cfg.bits, group_sizes[t])
        layers[t] = LayerQParams(delta, zp, cfg.bits, group_sizes[t])
    return Calibration(layers, "rtn", cfg.bits), {"blocks": []}
