"""The ComfyUI-compatible HTTP + websocket server (`nodegraph serve`). See docs/api.md.

Modules: `app` (routes table, static files), `routes_*` (handlers by area), `websocket` and `hub` (clients and
message routing), `worker` (takes jobs from the queue, runs them, engine events -> messages), `store` (SQLite queue
and history), `prompts` (POST /prompt semantics), `executors` (where prompts run: local or Ray), `security` (Host /
Origin / token guards), `openapi`, `serve` (the process). The queue service and its `Job` are in nodegraph/jobs.py,
below this package and nodegraph/distributed.
"""
from .app import create_app
from .config import ServerConfig
from .serve import serve

__all__ = ["ServerConfig", "create_app", "serve"]
