"""SignRound / AutoRound-style learned rounding (Cheng et al. 2023), weight-only, block by block.

The block loop, activation caches, resume and torchrun split are omniquant.py's; what differs is what each
block learns and how (kernels/rounding.py): a rounding offset per weight and a range scale per group end,
moved by signed gradient descent at a rate of 1/steps decaying linearly to 0, with the parameters of the
lowest minibatch loss kept. The artifact adds each Linear's adjusted weight (the weight its learned codes
round to at scale 1), which tune, fold, eval and export put into the model before they quantize it.
"""

import torch

from qslaw_pipe.kernels.rounding import RoundingQuantizer
from qslaw_pipe.stages.calibrate.omniquant import Tuning, as_calibration, omniquant


class SignSGD(torch.optim.Optimizer):
    """p <- p - lr * sign(grad): every parameter moves by the same step, whatever its gradient's scale."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


def sign_descent(params, lr: float, steps: int):
    """SignSGD with its rate decaying linearly from `lr` to 0 over `steps` (AutoRound's schedule)."""
    opt = SignSGD(params, lr)
    return opt, torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.0, total_iters=max(steps, 1))


SIGNROUND = Tuning(RoundingQuantizer, sign_descent, keep_best=True)


def calibrate(lm, targets, group_sizes, cfg, text_path, out, bar=True, compute=None):
    results, losses = omniquant(lm, targets, cfg, text_path, out / "resume", bar, compute, tuning=SIGNROUND)
    return as_calibration(results, group_sizes, cfg, "signround"), {"blocks": losses}
