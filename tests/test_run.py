"""`qslaw-pipe run` end to end on a tiny LLaVA, then again (every stage reused)."""

import json

from click.testing import CliRunner

from qslaw_pipe.cli import main
from tests.tiny import tiny_scienceqa


def test_run_end_to_end_and_resume(tmp_path, llava_dir, corpus):
    sqa = tiny_scienceqa(tmp_path / "sqa")
    args = [
        "run",
        "--run-dir",
        str(tmp_path / "r"),
        "--model",
        str(llava_dir),
        "--text",
        str(corpus),
        "--data",
        str(sqa),
        "--nsamples",
        "4",
        "--seqlen",
        "16",
        "--epochs",
        "1",
        "--steps",
        "3",
        "--limit",
        "0",
        "--json",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n"] == 6 and 0 <= out["accuracy"] <= 1 and isinstance(out["demo"]["answer"], str)
    for stage in ("calibrate", "tune", "fold", "export-onnx-matmulnbits", "eval-mcq-export-onnx-matmulnbits"):
        assert (tmp_path / "r" / stage / "manifest.json").is_file()
    stamp = (tmp_path / "r" / "tune" / "manifest.json").stat().st_mtime_ns
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "(reused)" in again.stderr
    assert (tmp_path / "r" / "tune" / "manifest.json").stat().st_mtime_ns == stamp


def test_run_deploys_the_fp16_decoder_where_the_cuda_ep_runs_it(monkeypatch):
    import onnxruntime as ort

    from qslaw_pipe.stages.export import export_config

    cfg = export_config()
    assert cfg.deployed("cpu") == cfg  # the CPU EP runs the exact fp32 decoder
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert cfg.deployed("auto").precision == "fp16"
    assert cfg.deployed("cuda:1").precision == "fp16"
    assert cfg.deployed("cpu") == cfg
    custom = export_config(int4_op="custom")  # reads fp32 activations
    assert custom.deployed("cuda") == custom
