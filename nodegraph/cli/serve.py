"""`nodegraph serve`: the serve options checked and turned into a ServerConfig, then the server run."""
from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.util
from pathlib import Path

from .args import AUTO_CONCURRENCY
from .inputs import make_folders
from .status import EXIT_FAILED, EXIT_INVALID, EXIT_OK, fail


def _auto_concurrency(device: str) -> int:
    """`--concurrency auto` on the device `--device` picks (no torch import when the answer does not need it)."""
    if device == "cpu":
        return AUTO_CONCURRENCY["cpu"]
    import torch

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return AUTO_CONCURRENCY["cuda" if cuda else "cpu"]



def _serve_token(args: argparse.Namespace) -> str | None:
    """The access token from --auth-token, --auth-token-file or NODEGRAPH_AUTH_TOKEN (at most one of them)."""
    import os

    from ..server.config import TOKEN_ENV

    given = [(name, value) for name, value in (("--auth-token", args.auth_token),
                                                 ("--auth-token-file", args.auth_token_file),
                                                 (TOKEN_ENV, os.environ.get(TOKEN_ENV))) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give the access token once: {' and '.join(name for name, _ in given)} are both set")
    if not given:
        return None
    name, value = given[0]
    if name == "--auth-token-file":
        lines = Path(value).read_text(encoding="utf-8").splitlines()
        value = lines[0].strip() if lines else ""
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    import logging
    import secrets

    from ..server import ServerConfig, serve
    from ..server.config import is_loopback
    from ..server.frontends import FrontendMissing, frontend_root

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = args.listen or args.host
    try:
        token = _serve_token(args)
    except (OSError, ValueError) as exc:
        return fail(str(exc), EXIT_INVALID)
    generated = token is None and not is_loopback(host)
    if generated:
        token = secrets.token_urlsafe(24)  # never expose an unauthenticated server to the network
    limits = (("--port", args.port, 0, 65535), ("--cache-entries", args.cache_entries, 1, 10**9),
              ("--max-history", args.max_history, 1, 10**9), ("--preview-size", args.preview_size, 16, 8192),
              ("--max-upload-size", args.max_upload_size, 0.001, 1 << 20),
              ("--max-output-size", args.max_output_size, 0.001, 1 << 14),
              ("--max-prompt-size", args.max_prompt_size, 0.001, 1 << 14),
              ("--max-image-pixels", args.max_image_pixels or 1, 1, 1 << 40))
    for name, value, low, high in limits:
        if not low <= value <= high:
            return fail(f"{name} must be between {low} and {high}, got {value}", EXIT_INVALID)
    ray_options = (args.ray_address, args.workers, args.worker_output_dir)
    if args.executor == "local" and any(option is not None for option in ray_options):
        return fail("--ray-address, --workers and --worker-output-dir need --executor ray", EXIT_INVALID)
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        return fail("--executor ray needs Ray: pip install 'nodegraph[ray]'", EXIT_INVALID)
    if args.worker_cpus <= 0:
        return fail(f"--worker-cpus must be above 0, got {args.worker_cpus}", EXIT_INVALID)
    if not 1 <= args.max_batch <= 4096:
        return fail(f"--max-batch must be between 1 and 4096, got {args.max_batch}", EXIT_INVALID)
    concurrency = _auto_concurrency(args.device) if args.concurrency == "auto" else args.concurrency
    web_root = args.web_root
    if args.frontend != "nodegraph":
        if web_root is not None:
            return fail("--frontend and --web-root both choose the editor; give one of them", EXIT_INVALID)
        try:
            web_root = frontend_root(args.frontend)
        except FrontendMissing as exc:
            return fail(f"--frontend {args.frontend}: {exc}", EXIT_INVALID)
    folders = make_folders(args)
    if concurrency > 1:
        folders.settings["max_batch"] = args.max_batch  # read by the model cache (Runtime.max_batch)
    config = ServerConfig(
        folders=folders,
        data_dir=args.data_dir,
        host=host,
        port=args.port,
        auth_token=token,
        announce_token=generated,
        allowed_origins=list(args.allow_origin),
        max_output_size_mb=args.max_output_size,
        max_prompt_size_mb=args.max_prompt_size,
        max_image_pixels=args.max_image_pixels,
        max_upload_size_mb=args.max_upload_size,
        cache=args.cache,
        cache_entries=args.cache_entries,
        max_history=args.max_history,
        preview_size=args.preview_size,
        preview_method=args.preview_method,
        web_root=web_root,
        executor=args.executor,
        concurrency=concurrency,
        max_batch=args.max_batch,
        ray_address=args.ray_address,
        workers=args.workers,
        worker_cpus=args.worker_cpus,
        worker_output_dir=args.worker_output_dir.absolute() if args.worker_output_dir else None,
    )
    try:
        config.check()
    except ValueError as exc:
        return fail(str(exc), EXIT_INVALID)
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = f"; another program (another nodegraph serve?) uses port {args.port}: pick another with --port N"
            hint += ", or --port 0 for any free one"
        return fail(f"cannot serve on {host}:{args.port}: {exc}{hint}", EXIT_FAILED)
    return EXIT_OK
