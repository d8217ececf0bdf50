"""torchao export: IntxUnpackedToInt8Tensor from our codes (exact), from_pretrained reload, CPU Int4OpaqueTensor."""

import pytest
import torch

from qslaw_pipe.exports.torchao_export import intx_weight, load_torchao, repeat_groups
from qslaw_pipe.kernels.quant import dequantize_codes, n_groups
from qslaw_pipe.pipeline.folded import load_folded_model
from qslaw_pipe.stages import export as ex


def test_short_last_group_becomes_repeated_blocks_exactly():
    """576 inputs in groups of 128 (4 x 128 + 64) -> blocks of 64 with each group's qparams twice."""
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (3, 576), dtype=torch.uint8, generator=gen)
    delta = torch.rand(3, n_groups(576, 128), generator=gen)
    zp = torch.randint(0, 16, delta.shape, dtype=torch.uint8, generator=gen)
    assert repeat_groups(delta, 128, 64, 576).shape == (3, 9)
    w = intx_weight(codes, delta, zp, 128)
    assert w.block_size == (1, 64)
    assert torch.equal(w.dequantize(), dequantize_codes(codes, delta, zp, 128))


@pytest.mark.parametrize("opaque, tol", [(False, 0.0), (True, 1e-5)])
def test_torchao_export_matches_folded_model(folded_run, opaque, tol):
    from torchao.prototype.quantization.int4.int4_opaque_tensor import Int4OpaqueTensor
    from torchao.quantization import IntxUnpackedToInt8Tensor

    run, _ = folded_run
    res = ex.run(ex.ExportConfig(format="torchao"), run)
    assert res.artifact.metrics["layers"] == 14
    lm = load_torchao(res.artifact.path, opaque=opaque)
    kind = Int4OpaqueTensor if opaque else IntxUnpackedToInt8Tensor
    assert sum(isinstance(getattr(m, "weight", None), kind) for m in lm.model.modules()) == 14
    ref = load_folded_model(run / "fold")
    ids = torch.tensor([[5, 9, 17, 33, 2, 40]])
    with torch.no_grad():
        a, b = lm.model(input_ids=ids).logits, ref.model(input_ids=ids).logits
    assert (a - b).abs().max() <= tol * b.abs().max()
