"""Running the server's prompts on Ray (`nodegraph serve --executor ray`, docs/ray.md).

Modules: `pool` (the server side: actors, scheduling, event streaming, retries; imports ray), `actor` (one worker:
an Executor and model cache on one device; imports ray), `scheduling` (model affinity, no ray) and `outputs`
(output files sent as bytes when workers do not share the server's disk, no ray). Nothing here is imported by the
server unless the Ray executor is chosen, and nothing here imports the server: the jobs it runs, their previews and
its configuration come from below (nodegraph/jobs.py, nodegraph/previews.py, `pool.PoolConfig`).
"""
