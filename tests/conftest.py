"""Shared test set-up: no network for model code, and the test-support plugins (tests/support)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# The fixtures of tests/support (server, editor, models, sd, ray), so test files use them without importing them.
pytest_plugins = ["support.server", "support.editor", "support.models", "support.sd", "support.ray"]


def pytest_collection_modifyitems(config, items):
    """Tests marked `fuzz` (the full 10,000-case fuzz run) run only when selected: `python -m pytest -m fuzz`."""
    import pytest

    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="the full fuzz run; select it with -m fuzz")
    for item in items:
        if "fuzz" in item.keywords:
            item.add_marker(skip)
