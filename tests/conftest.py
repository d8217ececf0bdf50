import os

import pytest

from qslaw_pipe.paths import cache_root
from tests.tiny import tiny_llava

# every custom-op build in the tests shares one copy of onnxruntime's headers, kept across runs
os.environ.setdefault("ORT_HEADERS_CACHE", str(cache_root() / "ort-headers"))


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory):
    """A tiny LLaVA (LM hidden 64, 2 layers) saved with its processor."""
    return tiny_llava(tmp_path_factory.mktemp("llava") / "model")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small raw text file standing in for WikiText (both halves long enough for a few chunks)."""
    from tests.tiny import CORPUS

    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(CORPUS * 4) + "\n")
    return path


@pytest.fixture(scope="session")
def folded_run(tmp_path_factory, llava_dir, corpus):
    """A tiny LLaVA calibrated (RTN W4 g32), QSLAW-tuned for 3 steps and folded; with a test image."""
    from PIL import Image

    from qslaw_pipe.stages import calibrate as cal
    from qslaw_pipe.stages import fold as fd
    from qslaw_pipe.stages import tune as tn
    from tests.tiny import tiny_scienceqa

    run = tmp_path_factory.mktemp("folded") / "r"
    sqa = tiny_scienceqa(tmp_path_factory.mktemp("sqa"))
    cal.run(cal.CalibrateConfig(method="rtn", bits=4, group_size=32), run, llava_dir, corpus, bar=False)
    cfg = tn.TuneConfig(data=str(sqa), steps=3, batch_size=2, warmup_steps=1, text_seqlen=16, lm_lr=2e-2)
    tn.run(cfg, run, llava_dir, corpus, bar=False)
    fd.run(fd.FoldConfig(), run)
    return run, Image.open(sqa / "images" / "test" / "test0" / "image.png").convert("RGB")


@pytest.fixture(scope="session")
def library(tmp_path_factory):
    """The ai.qslaw custom-op library (CPU kernels), built once per test session."""
    from qslaw_pipe.kernels import build as kb

    try:
        return kb.build(tmp_path_factory.mktemp("ortlib"), cuda=False)
    except kb.BuildError as e:
        pytest.skip(f"custom-op library not buildable here: {e}")
