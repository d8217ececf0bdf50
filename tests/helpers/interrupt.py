"""Stages interrupted on purpose, as a kill would leave them: a KeyboardInterrupt raised inside the work at a
chosen block or step, so the partial directory holds what the stage had written by then."""

import pytest

from qslaw_pipe.stages import calibrate as cal
from qslaw_pipe.stages import tune as tn


def interrupted_calibration(cfg, run, model, corpus, monkeypatch, at_block: int = 1):
    """cal.run stopped as block `at_block` starts; returns the partial directory."""
    from qslaw_pipe.stages.calibrate import omniquant

    real = omniquant.calibrate_block

    def dies(block, names, fp_in, q_in, kwargs, cfg_, index, bar=True, **kw):
        if index == at_block:
            raise KeyboardInterrupt
        return real(block, names, fp_in, q_in, kwargs, cfg_, index, bar, **kw)

    monkeypatch.setattr(omniquant, "calibrate_block", dies)
    with pytest.raises(KeyboardInterrupt):
        cal.run(cfg, run, model, corpus, bar=False)
    monkeypatch.setattr(omniquant, "calibrate_block", real)
    return run / ".calibrate.partial"


def interrupted_tuning(cfg, run, model, corpus, monkeypatch, at_step: int = 4):
    """tn.run stopped as step `at_step` (0-based) starts; returns the partial directory."""
    from qslaw_pipe.stages.tune import loop

    real, count = loop.train_step, {"n": 0}

    def dies(*a, **k):
        count["n"] += 1
        if count["n"] == at_step + 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_step", dies)
    with pytest.raises(KeyboardInterrupt):
        tn.run(cfg, run, model, corpus, bar=False)
    monkeypatch.setattr(loop, "train_step", real)
    return run / ".tune.partial"
