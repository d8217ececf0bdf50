"""QslawLinear: a frozen int-k Linear whose only parameter is the per-group scale `s` (kernels/qslaw.py).

Swapping it in keeps the frozen weight once, grouped [out, n_groups, group_size], in the dtype it was
loaded in (fp32 on the CPU; the compute dtype, e.g. bf16, on a GPU: 2 bytes per weight), with `delta`,
`zp`, the bias and `scale` [out, n_groups] fp32 (init 1). `keep` saves W_q and the scale-gradient
coefficients from forward for backward (faster; two weight-sized tensors per layer held during a step)
instead of rebuilding them (kernels/qslaw.QslawLinearFunction).
"""

import torch
from torch import nn

from qslaw_pipe.kernels.qslaw import QslawLinearFunction, dequant_scaled
from qslaw_pipe.kernels.quant import to_groups
from qslaw_pipe.pipeline.qparams import LayerQParams


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
