"""Nothing an artifact is or is checked against depends on the CPU: the fresh projector and added token
rows are drawn the same way on every torch kernel path, and an export with our int4 op made under one
of our CPU kernel paths ($QSLAW_CPU_ISA) is reused and answers alike under every other path."""

import json
import os
import subprocess
import sys

import pytest
import torch

from qslaw_pipe.kernels.isa import supported_isas
from qslaw_pipe.stages import export as ex
from qslaw_pipe.stages.prepare.assemble import portable_normal

DRAW = (
    "import hashlib, torch; from qslaw_pipe.stages.prepare.assemble import portable_normal; "
    "t = portable_normal((96, 333), 0.02, torch.Generator().manual_seed(3)); "
    "print(hashlib.sha256(t.numpy().tobytes()).hexdigest())"
)


def _python(code: str, env: dict) -> str:
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=600
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]


def test_portable_draws_are_normal_and_the_same_on_every_torch_kernel_path():
    t = portable_normal((400, 500), 0.02, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float32 and abs(t.std().item() - 0.02) < 2e-4 and abs(t.mean().item()) < 2e-4
    paths = ("default", "avx2", "avx512")  # the ones this CPU lacks fall back to the widest it has
    assert len({_python(DRAW, {"ATEN_CPU_CAPABILITY": p}) for p in paths}) == 1


GENERATE = (
    "import json, sys; from PIL import Image; from qslaw_pipe.stages import export as ex; "
    "from qslaw_pipe.exports.onnx.runtime import OrtVlm; "
    "res = ex.run(ex.export_config(int4_op='custom'), sys.argv[1]); "
    "answer = OrtVlm(res.artifact.path, device='cpu').generate('What color is the square?', "
    "Image.open(sys.argv[2]), 6); print(json.dumps({'reused': res.reused, 'answer': answer}))"
)


def test_an_export_for_our_op_is_reused_and_answers_alike_on_every_kernel_path(
    folded_run, library, tmp_path, monkeypatch
):
    run, image = folded_run
    monkeypatch.setenv("QSLAW_ORT_OPS", str(library))
    made = ex.run(ex.export_config(int4_op="custom"), run).artifact.path
    manifest = (made / "manifest.json").read_text()
    image.save(tmp_path / "img.png")
    isas = supported_isas(library)
    assert "generic" in isas
    answers = {}
    for isa in isas:
        code = GENERATE.replace("sys.argv[1]", repr(str(run))).replace(
            "sys.argv[2]", repr(str(tmp_path / "img.png"))
        )
        out = json.loads(_python(code, {"QSLAW_CPU_ISA": isa}))
        assert out["reused"], isa
        answers[isa] = out["answer"]
    assert len(set(answers.values())) == 1, answers
    assert (made / "manifest.json").read_text() == manifest


@pytest.mark.parametrize("seed", [0, 5])
def test_added_token_rows_are_drawn_portably_or_taken_as_given(seed):
    from qslaw_pipe.stages.prepare.assemble import add_token_rows
    from tests.tiny import tiny_llama

    lm = tiny_llama(100, 0)
    before = lm.get_input_embeddings().weight[:100].clone()
    add_token_rows(lm, 102, None, seed)
    drawn = lm.get_input_embeddings().weight
    again = tiny_llama(100, 0)
    add_token_rows(again, 102, None, seed)
    assert drawn.shape[0] == 102 and torch.equal(drawn[:100], before)
    assert torch.equal(drawn, again.get_input_embeddings().weight)
    rows = torch.full((2, drawn.shape[1]), 0.5)
    given = tiny_llama(100, 0)
    add_token_rows(given, 102, rows, seed)
    assert torch.equal(given.get_input_embeddings().weight[100:], rows)
    assert torch.equal(given.get_output_embeddings().weight[100:], rows)
