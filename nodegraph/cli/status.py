"""Exit statuses of the `nodegraph` command and how a failure is reported on stderr."""
from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def fail(message: str, code: int) -> int:
    print(f"nodegraph: {message}", file=sys.stderr)
    return code
