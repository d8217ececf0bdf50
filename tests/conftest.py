import pytest

from tests.tiny import tiny_llava


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
