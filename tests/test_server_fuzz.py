"""Hypothesis fuzzing: malformed workflows and bodies on every route never get a 5xx, and the server keeps
answering. The number of generated cases is printed (run with -s) and asserted."""
from __future__ import annotations

import json
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph.server.app import ROUTES
from support.server import ServerThread, http, make_config
from support.workflows import math_workflow

CASES = {"workflows": 0, "accepted": 0, "requests": 0, "uploads": 0}
NODE_TYPES = ["PrimitiveInt", "IntMath", "ShowText", "Sleep", "StringFormat", "ToString", "TestPattern",
              "SaveTestImage", "Nope", ""]

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)
links = st.tuples(st.sampled_from(["1", "2", "3", "9", 1]), st.one_of(st.integers(-2, 3), st.text(max_size=2))).map(
    list)
node = st.fixed_dictionaries({
    "class_type": st.one_of(st.sampled_from(NODE_TYPES), scalars),
    "inputs": st.one_of(st.dictionaries(st.sampled_from(["value", "a", "b", "op", "seconds", "template", "image",
                                                         "steps", "width"]),
                                        st.one_of(links, json_values), max_size=4), json_values),
})
random_workflows = st.dictionaries(st.sampled_from(["1", "2", "3", "4"]), st.one_of(node, json_values), max_size=4)


@st.composite
def mutated_workflows(draw: st.DrawFn) -> dict:
    """A valid workflow with one input replaced by a random value (or link): near-misses reach deeper code."""
    workflow = math_workflow()
    target = draw(st.sampled_from(sorted(workflow)))
    name = draw(st.sampled_from(sorted(workflow[target]["inputs"]) + ["extra"]))
    workflow[target]["inputs"][name] = draw(st.one_of(links, json_values))
    return workflow


workflows = st.one_of(random_workflows, mutated_workflows())
bodies = st.fixed_dictionaries({"prompt": workflows}, optional={
    "number": json_values, "front": json_values, "prompt_id": json_values, "client_id": json_values,
    "extra_data": json_values, "partial_execution_targets": json_values})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with ServerThread(make_config(tmp_path_factory.mktemp("fuzz"))) as running:
        yield running
    print(f"\nfuzz cases: {CASES}")
    assert CASES["workflows"] >= 150 and CASES["requests"] >= 200 and CASES["uploads"] >= 150


def _alive(url: str) -> None:
    status, _, _ = http("GET", f"{url}/api/prompt")
    assert status == 200


# Sleep inputs are capped so a valid random workflow cannot hold the queue for long.
def _tame(body: dict) -> dict:
    for value in body["prompt"].values():
        if isinstance(value, dict) and isinstance(value.get("inputs"), dict) and "seconds" in value["inputs"]:
            value["inputs"]["seconds"] = 0
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_malformed_workflows_never_5xx(server, body):
    CASES["workflows"] += 1
    status, data, _ = http("POST", f"{server.url}/api/prompt", _tame(body))
    assert status in (200, 400), data
    answer = json.loads(data)
    CASES["accepted"] += status == 200
    if status == 400:
        assert answer["error"]["type"] and "node_errors" in answer
    _alive(server.url)


paths = [path for _, path, _ in ROUTES if path != "/ws"]
segments = st.one_of(st.text(max_size=10), st.sampled_from(["..", "%2e%2e", "..%2F..", "a.png", "workflows%2Fx"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PUT"]), path=st.sampled_from(paths),
       fill=segments, query=st.dictionaries(st.sampled_from(["filename", "type", "subfolder", "max_items", "offset",
                                                             "limit", "status", "dir", "path", "channel", "preview",
                                                             "sort_by", "overwrite"]),
                                            st.text(max_size=8), max_size=3),
       raw=st.one_of(st.binary(max_size=40), json_values.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=60).map(lambda b: b"--xyz\r\nContent-Disposition: form-data; name=image; "
                                                          b"filename=a.png\r\n\r\n" + b + b"\r\n--xyz--\r\n")),
       content_type=st.sampled_from([None, "application/json", "multipart/form-data; boundary=xyz",
                                     "multipart/form-data", "text/plain"]))
def test_routes_never_5xx(server, method, path, fill, query, raw, content_type):
    CASES["requests"] += 1
    concrete = path
    for name in ("{prompt_id}", "{job_id}", "{folder}", "{node_class}", "{setting_id}", "{file}", "{dest}"):
        concrete = concrete.replace(name, urllib.parse.quote(fill, safe="%") or "x")
    if concrete.endswith("/free") or concrete.endswith("/interrupt") or "clear" in str(raw):
        raw = b"{}"  # keep the fuzz from wiping state other cases look at; the bodies are fuzzed elsewhere
    url = f"{server.url}/api{concrete}?{urllib.parse.urlencode(query)}"
    headers = {"Content-Type": content_type} if content_type else {}
    status, data, headers = http(method, url, raw=raw if method in ("POST", "PUT") else None, headers=headers)
    assert status < 500, (method, url, status, data[:200])
    if status >= 400:
        assert headers.get("Content-Type", "").startswith("application/json"), (url, headers)
    _alive(server.url)


PART_HEADS = [b"", b"--xyz\r\nContent-Disposition: form-data; name=image; filename=a.png\r\n\r\n",
              b"--xyz\r\nContent-Disposition: form-data; name=original_ref\r\n\r\n", b"--xyz\r\n"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/upload/image", "/upload/mask"]), head=st.sampled_from(PART_HEADS),
       body=st.binary(max_size=80), tail=st.sampled_from([b"", b"\r\n--xyz--\r\n", b"\r\n--xyz\r\n"]),
       content_type=st.sampled_from(["multipart/form-data; boundary=xyz", "multipart/form-data; boundary=",
                                     "application/x-www-form-urlencoded"]))
def test_malformed_multipart_never_5xx(server, path, head, body, tail, content_type):
    CASES["uploads"] += 1
    status, data, _ = http("POST", f"{server.url}/api{path}", raw=head + body + tail,
                           headers={"Content-Type": content_type})
    assert status < 500, (path, head + body + tail, data[:200])
    _alive(server.url)
