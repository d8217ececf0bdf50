"""bench/accuracy.py end to end on a tiny model (2 steps, 8 questions): every method of the protocol runs,
scores the same questions, and the tables, JSON and plot are written; the Wilson interval is right."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.tiny import tiny_scienceqa

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wilson_interval_matches_known_values():
    lo, hi = _bench().wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)


def test_accuracy_bench_runs_end_to_end_on_a_tiny_model(tmp_path, llava_dir, corpus):
    sqa = tiny_scienceqa(tmp_path / "sqa")
    out = tmp_path / "out"
    args = [
        "--model",
        str(llava_dir),
        "--data",
        str(sqa),
        "--text",
        str(corpus),
        "--steps",
        "2",
        "--limit",
        "8",
    ]
    args += [
        "--bits",
        "4",
        "--calib-method",
        "rtn",
        "--group-size",
        "32",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    _bench().main([*args, "--runs", str(tmp_path / "runs"), "--out", str(out), "--no-bar"])
    result = json.loads((out / "accuracy.json").read_text())
    names = [r["name"] for r in result["runs"]]
    assert names == ["fp", "qslaw W4", "frozen W4", "qslaw no-warmup W4", "qslaw mm-only W4", "qlora"]
    assert len({r["easyvqa"]["n"] for r in result["runs"]}) == 1
    assert all(r["config"]["steps"] == 2 for r in result["runs"])
    md = (out / "accuracy.md").read_text()
    assert "QSLAW W4 >= FP - 1 point" in md and (out / "accuracy.png").stat().st_size > 0
