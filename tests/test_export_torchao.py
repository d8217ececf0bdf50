"""torchao export: IntxUnpackedToInt8Tensor from our codes (exact), from_pretrained reload, CPU Int4OpaqueTensor."""

import pytest
import torch

from qslaw_pipe.exports.torchao import intx_weight, load_torchao
from qslaw_pipe.kernels.quant import dequantize_codes, n_groups, repeat_groups
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


@pytest.mark.parametrize(
    "packed, dtype, tol", [(False, "fp32", 0.0), (True, "fp32", 1e-5), (True, "bf16", 3e-2)]
)
def test_torchao_export_matches_folded_model(folded_run, packed, dtype, tol):
    """Unpacked and packed-fp32 are exact to fp32 rounding; the default (bf16 activations, the fast kernel) is
    within bf16 rounding."""
    from torchao.prototype.quantization.int4.int4_opaque_tensor import Int4OpaqueTensor
    from torchao.quantization import IntxUnpackedToInt8Tensor

    run, _ = folded_run
    res = ex.run(ex.export_config(format="torchao"), run)
    assert res.artifact.metrics["layers"] == 14
    lm = load_torchao(res.artifact.path, packed=packed, dtype=dtype)
    kind = Int4OpaqueTensor if packed else IntxUnpackedToInt8Tensor
    assert sum(isinstance(getattr(m, "weight", None), kind) for m in lm.model.modules()) == 14
    ref = load_folded_model(run / "fold")
    ids = torch.tensor([[5, 9, 17, 33, 2, 40]])
    with torch.no_grad():
        a, b = lm.model(input_ids=ids).logits.float(), ref.model(input_ids=ids).logits
    assert (a - b).abs().max() <= tol * b.abs().max()


def test_the_default_load_answers_an_image_question_as_the_folded_model(folded_run):
    """bf16 activations with the int4 kernel, image included: the greedy answer of the folded model."""
    from qslaw_pipe.stages.evaluate.generate import generate

    run, image = folded_run
    out = ex.run(ex.export_config(format="torchao"), run).artifact.path
    lm, ref = load_torchao(out), load_folded_model(run / "fold")
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    question = "What shape is in the image?"
    assert generate(lm, question, image, 6) == generate(ref, question, image, 6)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
    reason="needs a CUDA device of compute capability 8.0+ (tinygemm)",
)
def test_torchao_cuda_tile_packed_matches_folded_model(folded_run):
    from torchao.quantization import Int4TilePackedTo4dTensor

    run, _ = folded_run
    res = ex.run(ex.export_config(format="torchao"), run)
    lm = load_torchao(res.artifact.path, device="cuda")
    assert (
        sum(isinstance(getattr(m, "weight", None), Int4TilePackedTo4dTensor) for m in lm.model.modules())
        == 14
    )
    ref = load_folded_model(run / "fold")
    ids = torch.tensor([[5, 9, 17, 33, 2, 40]])
    with torch.no_grad():
        a, b = lm.model(input_ids=ids.cuda()).logits.float().cpu(), ref.model(input_ids=ids).logits
    assert (a - b).abs().max() <= 2e-2 * b.abs().max()  # bf16 activations and scales


def test_torchao_load_on_a_missing_device_names_the_fix(folded_run):
    from qslaw_pipe.errors import QslawError

    run, _ = folded_run
    res = ex.run(ex.export_config(format="torchao"), run)
    device = "meta" if torch.cuda.is_available() else "cuda"
    with pytest.raises(QslawError, match="use device cpu"):
        load_torchao(res.artifact.path, device=device)
