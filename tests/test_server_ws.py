"""Websocket behaviour against docs/compat.md §2: message order, caching, interrupts, errors, routing,
previews, reconnects and prompts sent over the socket."""
from __future__ import annotations

import json
import struct

from support.server import finished, messages_until, open_ws, types
from support.workflows import image_workflow, math_workflow, sleep_workflow


async def post(client, prompt, **body):
    response = await client.post("/api/prompt", json={"prompt": prompt, **body})
    return response.status, await response.json()


async def test_status_with_generated_sid_and_feature_flags(client):
    ws = await client.ws_connect("/ws")
    status = await ws.receive_json()
    assert status == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}},
                                                 "sid": status["data"]["sid"]}}
    assert len(status["data"]["sid"]) == 32
    await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    reply = await ws.receive_json()
    assert reply["type"] == "feature_flags"
    assert reply["data"]["supports_preview_metadata"] is True
    assert reply["data"]["max_upload_size"] == 100 * 1024 * 1024


async def test_message_order_for_one_prompt(client):
    ws, sid = await open_ws(client, "alice")
    assert sid == "alice"
    status, body = await post(client, image_workflow(steps=2), client_id=sid, extra_data={"preview_method": "auto"})
    assert status == 200, body
    pid = body["prompt_id"]
    seen = await messages_until(ws, finished(pid))
    order = [t for t in types(seen) if t != "progress_state"]
    assert order == [
        "status", "execution_start", "execution_cached",
        "executing", "progress", "binary", "progress", "binary",  # node 1: progress + previews
        "executing", "executed",  # node 2: the saved image
        "execution_success", "executing",
    ]
    executed = next(m for m in seen if isinstance(m, dict) and m["type"] == "executed")
    assert executed["data"]["node"] == "2" and executed["data"]["display_node"] == "2"
    assert executed["data"]["output"]["images"][0]["type"] == "output"
    for m in seen:
        if isinstance(m, dict) and m["type"].startswith("execution_"):
            assert isinstance(m["data"]["timestamp"], int)
    states = [m["data"]["nodes"] for m in seen if isinstance(m, dict) and m["type"] == "progress_state"]
    # Each progress_state carries only the node that changed (one entry); merged they give every node's state.
    assert all(len(state) == 1 for state in states)
    merged = {nid: node for state in states for nid, node in state.items()}
    assert merged["1"]["state"] == "finished" and merged["2"]["state"] == "finished"
    # The status after the prompt comes last, once the queue is empty again.
    after = await ws.receive_json()
    assert after == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}


async def test_preview_frames_type4_with_metadata_and_type1_for_legacy_clients(client):
    modern, sid_modern = await open_ws(client, "modern", metadata_previews=True)
    legacy, _ = await open_ws(client, "legacy", metadata_previews=False)
    # No client_id: progress and previews reach everyone, each in the frame type it understands.
    status, body = await post(client, image_workflow(steps=1, shade=7), extra_data={"preview_method": "latent2rgb"})
    pid = body["prompt_id"]
    frames_modern = [m for m in await messages_until(modern, finished(pid)) if isinstance(m, bytes)]
    frames_legacy = [m for m in await messages_until(legacy, finished(pid)) if isinstance(m, bytes)]
    assert len(frames_modern) == len(frames_legacy) == 1
    kind, meta_len = struct.unpack(">II", frames_modern[0][:8])
    assert kind == 4
    meta = json.loads(frames_modern[0][8:8 + meta_len])
    assert meta == {"node_id": "1", "prompt_id": pid, "display_node_id": "1", "parent_node_id": None,
                    "real_node_id": "1", "image_type": "image/jpeg"}
    jpeg = frames_modern[0][8 + meta_len:]
    kind, image_format = struct.unpack(">II", frames_legacy[0][:8])
    assert (kind, image_format) == (1, 1) and frames_legacy[0][8:] == jpeg
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(jpeg)) as img:
        assert img.format == "JPEG" and img.size == (512, 384)  # 640x480 scaled to fit 512


async def test_cached_rerun_lists_all_nodes_and_resends_executed(client):
    ws, sid = await open_ws(client)
    _, first = await post(client, math_workflow(), client_id=sid)
    await messages_until(ws, finished(first["prompt_id"]))
    _, again = await post(client, math_workflow(), client_id=sid)
    pid = again["prompt_id"]
    seen = await messages_until(ws, finished(pid))
    assert types(seen, pid) == ["execution_start", "execution_cached", "executed", "execution_success", "executing"]
    cached = next(m for m in seen if m["type"] == "execution_cached")
    assert sorted(cached["data"]["nodes"]) == ["1", "2", "3", "4"]
    executed = next(m for m in seen if m["type"] == "executed")
    assert executed["data"]["node"] == "4" and executed["data"]["output"] == {"text": ["5"]}


async def test_literal_only_change_reruns_the_changed_node_and_downstream(client):
    ws, sid = await open_ws(client)
    _, first = await post(client, math_workflow(2, 3), client_id=sid)
    await messages_until(ws, finished(first["prompt_id"]))
    _, second = await post(client, math_workflow(2, 10), client_id=sid)  # the "seed" of node 2 changes
    pid = second["prompt_id"]
    seen = await messages_until(ws, finished(pid))
    cached = next(m for m in seen if m["type"] == "execution_cached")["data"]["nodes"]
    ran = [m["data"]["node"] for m in seen if m["type"] == "executing" and m["data"]["node"]]
    assert cached == ["1"] and ran == ["2", "3", "4"]
    executed = next(m for m in seen if m["type"] == "executed")
    assert executed["data"]["output"] == {"text": ["12"]}
    history = await (await client.get(f"/api/history/{pid}")).json()
    assert sorted(history[pid]["timings"]) == ["2", "3", "4"]


async def test_interrupt_mid_run_then_next_prompt_runs(client):
    ws, sid = await open_ws(client)
    _, slow = await post(client, sleep_workflow(30), client_id=sid)
    pid = slow["prompt_id"]
    await messages_until(ws, lambda m: m["type"] == "progress")  # Sleep is running
    other = await client.post("/api/interrupt", json={"prompt_id": "not-the-running-one"})
    assert other.status == 200
    assert (await client.post("/api/interrupt", json={"prompt_id": pid})).status == 200
    seen = await messages_until(ws, finished(pid))
    interrupted = next(m for m in seen if m["type"] == "execution_interrupted")
    assert interrupted["data"]["node_id"] == "2" and interrupted["data"]["node_type"] == "Sleep"
    assert "1" in interrupted["data"]["executed"]
    entry = (await (await client.get(f"/api/history/{pid}")).json())[pid]
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    job = await (await client.get(f"/api/jobs/{pid}")).json()
    assert job["status"] == "cancelled"
    _, nxt = await post(client, math_workflow(7, 7), client_id=sid)
    seen = await messages_until(ws, finished(nxt["prompt_id"]))
    assert "execution_success" in types(seen)


async def test_one_at_a_time_a_prompt_ends_before_the_next_starts(client):
    # The slot is given back only after the prompt is recorded and its end sent: before, a quick next prompt could
    # start (and send execution_start .. execution_success) while the last one's history write was in flight. That
    # needs a slow history write, so on the old code this failed only on a loaded machine (as the test below did in
    # a full run), not every time.
    ws, sid = await open_ws(client)
    ids = []
    for n in range(8):
        _, body = await post(client, math_workflow(n, 100 + n), client_id=sid)
        ids.append(body["prompt_id"])
    seen = await messages_until(ws, finished(ids[-1]))
    events = [(m["type"], m["data"].get("prompt_id"), m["data"].get("node", "-")) for m in seen
              if m["type"] in ("execution_start", "executing")]
    starts = [pid for kind, pid, _ in events if kind == "execution_start"]
    ends = [pid for kind, pid, node in events if kind == "executing" and node is None]
    assert starts == ids and ends == ids
    order = [(kind, pid) for kind, pid, node in events if kind == "execution_start" or node is None]
    assert order == [pair for pid in ids for pair in (("execution_start", pid), ("executing", pid))]


async def test_node_error_reports_and_queue_continues(client):
    ws, sid = await open_ws(client)
    failing = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "x"}},
               "2": {"class_type": "Explode", "inputs": {"message": "kaput", "value": ["1", 0]}}}
    _, bad = await post(client, failing, client_id=sid)
    _, good = await post(client, math_workflow(1, 1), client_id=sid)
    seen = await messages_until(ws, finished(bad["prompt_id"]))
    error = next(m for m in seen if m["type"] == "execution_error")["data"]
    assert error["node_id"] == "2" and error["node_type"] == "Explode"
    assert error["exception_type"] == "ValueError" and error["exception_message"] == "kaput"
    assert error["executed"] == ["1"] and error["current_inputs"]["message"] == ["'kaput'"]
    assert isinstance(error["traceback"], list) and error["traceback"]
    entry = (await (await client.get(f"/api/history/{bad['prompt_id']}")).json())[bad["prompt_id"]]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_error"
    job = await (await client.get(f"/api/jobs/{bad['prompt_id']}")).json()
    assert job["status"] == "failed" and job["execution_error"]["exception_message"] == "kaput"
    seen = await messages_until(ws, finished(good["prompt_id"]))
    assert "execution_success" in types(seen)


async def test_prompt_without_client_id_is_broadcast_to_everyone(client):
    ws_a, _ = await open_ws(client)
    ws_b, _ = await open_ws(client)
    _, body = await post(client, math_workflow(4, 4))
    pid = body["prompt_id"]
    for ws in (ws_a, ws_b):
        seen = await messages_until(ws, finished(pid))
        assert [t for t in types(seen, pid) if t != "progress_state"] == [
            "execution_start", "execution_cached", "executing", "executing", "executing", "executing", "executed",
            "execution_success", "executing"]


async def test_prompt_with_client_id_goes_only_to_that_client(client):
    ws_a, sid_a = await open_ws(client)
    ws_b, _ = await open_ws(client)
    _, body = await post(client, math_workflow(5, 6), client_id=sid_a)
    pid = body["prompt_id"]
    await messages_until(ws_a, finished(pid))
    # b sees only broadcasts: status and progress_state, then the final status.
    seen_b = await messages_until(ws_b, lambda m: m["type"] == "status" and
                                  m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    assert set(types(seen_b)) <= {"status", "progress_state"}


async def test_prompt_over_the_websocket(client):
    ws, sid = await open_ws(client)
    await ws.send_json({"type": "prompt", "request_id": 7, "data": {"prompt": math_workflow(20, 22)}})
    queued = await messages_until(ws, lambda m: m["type"] in ("prompt_queued", "prompt_error"))
    reply = queued[-1]
    assert reply["type"] == "prompt_queued" and reply["data"]["request_id"] == 7
    assert set(reply["data"]) == {"prompt_id", "number", "node_errors", "request_id"}
    seen = await messages_until(ws, finished(reply["data"]["prompt_id"]))
    executed = next(m for m in seen if m["type"] == "executed")
    assert executed["data"]["output"] == {"text": ["42"]}
    await ws.send_json({"type": "prompt", "data": {"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}})
    error = (await messages_until(ws, lambda m: m["type"] == "prompt_error"))[-1]
    assert error["data"]["error"]["type"] == "missing_node_type" and error["data"]["node_errors"] == {}
    await ws.send_str("{not json")
    assert (await ws.receive_json())["type"] == "error"


async def test_reconnect_resumes_stream_and_replaces_old_socket(client):
    ws, sid = await open_ws(client, "bob")
    _, body = await post(client, sleep_workflow(0.6), client_id=sid)
    pid = body["prompt_id"]
    await messages_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
    await ws.close()
    # Back while node 2 still runs: status with the same sid, then the resumed stream.
    ws2 = await client.ws_connect("/ws", params={"clientId": "bob"})
    seen = await messages_until(ws2, finished(pid))
    assert seen[0]["type"] == "status" and seen[0]["data"]["sid"] == "bob"
    assert "execution_success" in types(seen)
    ws3 = await client.ws_connect("/ws", params={"clientId": "bob"})
    await ws3.receive_json()
    closed = await ws2.receive()
    while closed.type == closed.type.TEXT:  # the final status may still be on its way
        closed = await ws2.receive()
    assert closed.type in (closed.type.CLOSE, closed.type.CLOSED, closed.type.CLOSING)


async def test_messages_wait_for_a_client_that_connects_after_posting(client):
    _, body = await post(client, math_workflow(9, 9), client_id="late-joiner")
    pid = body["prompt_id"]
    ws = await client.ws_connect("/ws", params={"clientId": "late-joiner"})
    seen = await messages_until(ws, finished(pid))
    assert "execution_start" in types(seen) and "executed" in types(seen)


async def test_reconnect_while_running_resends_executing(client):
    ws, sid = await open_ws(client, "carol")
    _, body = await post(client, sleep_workflow(30), client_id=sid)
    pid = body["prompt_id"]
    await messages_until(ws, lambda m: m["type"] == "executing" and m["data"]["node"] == "2")
    ws2 = await client.ws_connect("/ws", params={"clientId": "carol"})
    seen = await messages_until(ws2, lambda m: m["type"] == "executing")
    assert seen[0]["type"] == "status"
    assert seen[-1]["data"] == {"node": "2", "display_node": "2", "prompt_id": pid}
    await client.post("/api/interrupt", json={})
    await messages_until(ws2, finished(pid))
