"""Train the demo models into demo_models/ (see demo_models/README.md), then evaluate them.

    python scripts/train_demo.py                  # train everything with the shipped settings
    python scripts/train_demo.py --families sd1   # SD1 and its ControlNet only
    python scripts/train_demo.py --evaluate-only  # table and grid for the files already there

Extra arguments go to `nodegraph_demo.train` (see its --help), e.g. --sd1-steps 500 for a quick try.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from nodegraph_demo import evaluate, train

    args = sys.argv[1:]
    models = ROOT / "demo_models"
    if "--evaluate-only" not in args:
        train.main(["--out", str(models), *args])
    evaluate.main(["--models", str(models), "--table", str(models / "eval.md"),
                   "--grid", str(ROOT / "docs" / "demo_grid.png")])


if __name__ == "__main__":
    main()
