"""The fast cases of bench/reliability.py (bad input, damaged artifacts, stale inputs): every one ends in
one line (exit 2) or works (a damaged artifact rebuilt identically); none is silent, a traceback or lost
work. The slow cases (kill -9 at seeded points, two writers) run in the bench."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fast_reliability_cases_end_in_one_line_or_work(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_reliability", ROOT / "bench" / "reliability.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--fast", "--in-process", "--out", str(tmp_path)])
    bad = [(r["case"], r["outcome"]) for r in rows if r["outcome"] not in ("one-line", "works")]
    assert len(rows) >= 25 and not bad
