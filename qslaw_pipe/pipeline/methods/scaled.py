"""qslaw and frozen (QSLAW, Xie et al., ACM MM 2024, eq. 7-8): every quantized LM Linear becomes a
QslawLinear, a frozen int-k Linear whose only parameter is the per-group scale `s` (kernels/qslaw.py);
qslaw trains the scales, frozen keeps them at 1.

QslawLinear keeps the frozen weight once, grouped [out, n_groups, group_size], in the dtype it was loaded in
(fp32 on the CPU; the compute dtype, e.g. bf16, on a GPU: 2 bytes per weight), with `delta`, `zp`, the bias
and `scale` [out, n_groups] fp32 (init 1). `keep` saves W_q and the scale-gradient coefficients from forward
for backward (faster; two weight-sized tensors per layer held during a step) instead of rebuilding them
(kernels/qslaw.QslawLinearFunction). `restore` writes each layer's tuned fake-quant weight W_q(s) into the
model (the values fold packs, from the weights in the dtype they were tuned in).
"""

import torch
from torch import nn

from qslaw_pipe.errors import QslawError
from qslaw_pipe.kernels.qslaw import QslawLinearFunction, dequant_scaled
from qslaw_pipe.kernels.quant import to_groups
from qslaw_pipe.pipeline.qparams import LayerQParams
from qslaw_pipe.pipeline.tuned import load_parameters


class QslawLinear(nn.Module):
    def __init__(
        self,
        linear: nn.Linear,
        q: LayerQParams,
        trainable: bool = True,
        compiled: bool = False,
        keep: bool = False,
    ):
        super().__init__()
        self.compiled, self.keep = compiled, keep
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bits, self.group_size = q.bits, q.group_size
        device = linear.weight.device
        delta = q.delta.float().to(device)
        # a frozen parameter, not a buffer: FSDP2 (`tune --shard`) shards parameters only
        grouped = to_groups(linear.weight.detach(), q.group_size).contiguous()
        self.w_groups = nn.Parameter(grouped, requires_grad=False)
        self.register_buffer("delta", delta)
        self.register_buffer("zp", q.zero_point.float().to(device))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.scale = nn.Parameter(torch.ones_like(delta), requires_grad=trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return QslawLinearFunction.apply(
            x,
            self.scale,
            self.w_groups,
            self.delta,
            self.zp,
            self.bias,
            self.bits,
            self.in_features,
            self.compiled,
            self.keep,
        )

    @torch.no_grad()
    def quantized_weight(self) -> torch.Tensor:
        """W_q [out, in] fp32 under the current scales."""
        return dequant_scaled(self.w_groups, self.scale, self.delta, self.zp, self.bits, self.in_features)


def attach_qslaw(
    model: nn.Module,
    qparams: dict[str, LayerQParams],
    trainable: bool = True,
    compiled: bool = False,
    keep: bool = False,
) -> dict[str, QslawLinear]:
    """Replace every Linear named in `qparams` by a QslawLinear, in place."""
    swapped = {}
    for name, q in qparams.items():
        module = QslawLinear(model.get_submodule(name), q, trainable, compiled, keep)
        model.set_submodule(name, module)
        swapped[name] = module
    return swapped


def prepare(model, method, names, calibration, options) -> None:
    if calibration is None:
        raise QslawError(
            f"--method {method.name} needs a calibrate artifact", "run `qslaw-pipe calibrate` first"
        )
    layers = {n: calibration.layers[n] for n in names}
    attach_qslaw(
        model, layers, method.name == "qslaw", options.get("compiled", False), options.get("keep", False)
    )


@torch.no_grad()
def _bake(linear: nn.Linear, q: LayerQParams, scale: torch.Tensor | None, dtype: torch.dtype) -> None:
    delta, zp = q.delta.float(), q.zero_point.float()
    s = torch.ones_like(delta) if scale is None else scale
    w_groups = to_groups(linear.weight.detach().to(dtype), q.group_size)
    linear.weight.copy_(dequant_scaled(w_groups, s, delta, zp, q.bits, linear.in_features))


def restore(model, method, tuned, calibration, tune_config: dict, compute_dtype) -> None:
    load_parameters(model, tuned.without_scales(calibration.layers))
    for name, q in calibration.layers.items():
        _bake(model.get_submodule(name), q, tuned.scale(name), tuned.weight_dtype)
