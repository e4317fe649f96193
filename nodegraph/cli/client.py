"""The HTTP client side of the command line: what a running `nodegraph serve` reports (`nodegraph models
--server URL`)."""
from __future__ import annotations

import argparse
import json

from .status import EXIT_FAILED, EXIT_OK, fail


def models_of_server(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(args.server.rstrip("/") + "/api/system_stats")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            stats = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return fail(f"cannot read {args.server}/api/system_stats: {exc}", EXIT_FAILED)
    owners = stats.get("nodegraph", {}).get("resources", {})
    models = owners.get("models") if isinstance(owners, dict) else None
    if args.json:
        print(json.dumps(models, indent=2))
        return EXIT_OK
    if not models:
        print("no models loaded (the server has not run a model node yet)")
        return EXIT_OK
    print(f"device {models['device']} ({models['dtype']}), {models['bytes_total'] >> 20} MiB loaded, "
          f"{models['bytes_on_device'] >> 20} MiB on the device")
    for entry in models["loaded"]:
        flag = " (in use)" if entry["in_use"] else ""
        print(f"  {entry['file']}:{entry['component']}  {entry['device']}  {entry['bytes'] >> 20} MiB{flag}")
    print("  " + ", ".join(f"{k} {models[k]}" for k in ("file_reads", "hits", "misses", "offloads", "drops")))
    return EXIT_OK
