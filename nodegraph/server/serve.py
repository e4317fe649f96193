"""Running the server process: bind, announce the address (and token), stop cleanly on SIGINT / SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TextIO

from aiohttp import web

from .app import create_app
from .config import ServerConfig
from .state import STATE

log = logging.getLogger(__name__)


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


async def serve(config: ServerConfig, announce: TextIO = sys.stdout) -> None:
    """Serve until SIGINT / SIGTERM. Prints `nodegraph listening on <url>` (with the real port when port is 0)."""
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    addresses = [a for a in runner.addresses if isinstance(a, tuple)]
    port = addresses[0][1] if addresses else config.port
    url = _url(config.host, port)
    print(f"nodegraph listening on {url}", file=announce, flush=True)
    app[STATE].warmup.start()  # import torch & co. now, while the user opens the editor (nodegraph/warmup.py)
    if config.auth_token and config.announce_token:
        print(f"access token required: open {url}/?token={config.auth_token}", file=announce, flush=True)
    elif config.auth_token:
        print("access token required (the one you gave)", file=announce, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        print("nodegraph: stopping", file=announce, flush=True)
        await runner.cleanup()
