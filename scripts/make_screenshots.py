"""Redraw the editor screenshots in docs/screenshots/ (the README and docs/editor.md show them).

    python scripts/make_screenshots.py

The browser tests take them while they drive the editor (tests/support/editor.py: EditorPage.screenshot); a plain
test run writes them to a temporary folder, and this script runs those tests with NODEGRAPH_SCREENSHOTS pointing at
docs/screenshots/. Needs Chromium and Playwright, as the browser tests do; the SD example runs take a few minutes
on two CPU cores.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_editor_browser.py", "tests/test_editor_sd.py"]


def main() -> int:
    target = ROOT / "docs" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NODEGRAPH_SCREENSHOTS": str(target),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "nodes"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT, env=env)
    if done.returncode != 0:
        print("some browser tests failed: the screenshots they take may be missing or stale", file=sys.stderr)
    for path in sorted(target.glob("*.png")):
        print(path.relative_to(ROOT))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
