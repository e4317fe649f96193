"""Validation: every error type of ComfyUI's shapes, all problems at once, dependent outputs, cycles."""
import json

import pytest

from nodegraph.engine import validate_prompt
from nodegraph.engine.validate import format_validation
from support.engine_nodes import make_registry


@pytest.fixture(scope="module")
def registry():
    return make_registry()


def errors_of(result, nid):
    return [e["type"] for e in result.node_errors[nid]["errors"]]


def test_valid_workflow_has_no_errors(registry):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 2}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0], "label": ""}},
    }
    result = validate_prompt(prompt, registry)
    assert result.ok and result.node_errors == {}
    assert result.workflow.outputs == ["2"]
    assert result.workflow.nodes["1"].constants == {"value": 2}
    assert result.workflow.nodes["2"].constants == {"label": ""}  # a widget left out takes its default


def test_unknown_node_type_is_reported_with_title(registry):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "7": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "My Custom"}},
        "8": {"class_type": "AlsoMissing", "inputs": {}},
        "2": {"class_type": "Collect", "inputs": {"value": ["7", 0], "label": ""}},
    }
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert result.error["type"] == "missing_node_type"
    assert result.error["message"] == "Node 'My Custom' not found. The custom node may not be installed."
    assert result.error["extra_info"] == {"node_id": "7", "class_type": "NoSuchNode", "node_title": "My Custom"}
    # every unknown node is listed, not only the first
    assert errors_of(result, "7") == ["missing_node_type"] and errors_of(result, "8") == ["missing_node_type"]
    assert result.node_errors["7"]["dependent_outputs"] == ["2"]


def test_missing_class_type(registry):
    result = validate_prompt({"1": {"inputs": {}}}, registry)
    assert result.error["type"] == "missing_node_type" and "has no class_type" in result.error["message"]


def test_not_a_dict():
    result = validate_prompt(["not", "a", "dict"], make_registry())
    assert result.error["type"] == "invalid_prompt"


def test_no_outputs(registry):
    result = validate_prompt({"1": {"class_type": "Const", "inputs": {"value": 1}}}, registry)
    assert result.error["type"] == "prompt_no_outputs"


def test_all_input_errors_at_once(registry):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 5000}},  # above max
        "2": {"class_type": "Add", "inputs": {"bias": "seven"}},  # missing required link a, bad int
        "3": {"class_type": "Add", "inputs": {"a": ["99", 0], "bias": -5000}},  # missing node, below min
        "4": {"class_type": "Add", "inputs": {"a": ["1", 3], "bias": 0}},  # no such output index
        "5": {"class_type": "Add", "inputs": {"a": ["9", 0], "bias": 0}},  # STRING into INT
        "6": {"class_type": "Add", "inputs": {"a": ["1", "x"], "bias": 0}},  # malformed link
        "9": {"class_type": "Text", "inputs": {"text": "hi"}},
    }
    for nid in ("1", "2", "3", "4", "5", "6"):
        prompt[f"c{nid}"] = {"class_type": "Collect", "inputs": {"value": [nid, 0], "label": ""}}
    result = validate_prompt(prompt, registry)
    assert result.error["type"] == "prompt_outputs_failed_validation"
    assert errors_of(result, "1") == ["value_bigger_than_max"]
    assert sorted(errors_of(result, "2")) == ["invalid_input_type", "required_input_missing"]
    assert sorted(errors_of(result, "3")) == ["bad_linked_input", "value_smaller_than_min"]
    assert errors_of(result, "4") == ["bad_linked_input"]
    assert errors_of(result, "5") == ["return_type_mismatch"]
    assert errors_of(result, "6") == ["bad_linked_input"]
    mismatch = result.node_errors["5"]["errors"][0]
    assert mismatch["extra_info"]["received_type"] == "STRING"
    assert mismatch["extra_info"]["linked_node"] == ["9", 0]
    assert "expected INT" in mismatch["details"]
    too_big = result.node_errors["1"]["errors"][0]
    assert too_big["extra_info"]["input_name"] == "value" and too_big["extra_info"]["received_value"] == 5000
    assert too_big["details"] == "value: 5000 is bigger than the maximum 1000"
    assert any("links to node '99'" in e["details"] for e in result.node_errors["3"]["errors"])
    # node 1 takes down both its own collector and the one behind node 4
    assert sorted(result.node_errors["1"]["dependent_outputs"]) == ["c1", "c4"]


def test_one_bad_output_keeps_the_good_one(registry):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0], "label": ""}},
        "3": {"class_type": "Const", "inputs": {"value": 1e9}},
        "4": {"class_type": "Collect", "inputs": {"value": ["3", 0], "label": ""}},
    }
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert result.workflow.outputs == ["2"]
    assert set(result.workflow.nodes) == {"1", "2"}
    assert result.node_errors["3"]["dependent_outputs"] == ["4"]


def test_cycle_names_its_nodes(registry):
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["3", 0], "bias": 0}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "bias": 0}},
        "3": {"class_type": "Add", "inputs": {"a": ["2", 0], "bias": 0}},
        "4": {"class_type": "Collect", "inputs": {"value": ["3", 0], "label": ""}},
        "5": {"class_type": "Add", "inputs": {"a": ["5", 0], "bias": 0}},
        "6": {"class_type": "Collect", "inputs": {"value": ["5", 0], "label": ""}},
    }
    result = validate_prompt(prompt, registry)
    assert not result.ok
    # Each cycle is reported once, on its first node, naming the others.
    (err,) = result.node_errors["1"]["errors"]
    assert err["type"] == "dependency_cycle"
    assert err["extra_info"]["cycle"] == ["1", "2", "3"] and err["extra_info"]["cycle_length"] == 3
    assert "1 -> 2 -> 3 -> 1" in err["details"]
    assert "2" not in result.node_errors and "3" not in result.node_errors
    assert result.node_errors["1"]["dependent_outputs"] == ["4"]
    assert result.node_errors["5"]["errors"][0]["extra_info"]["cycle"] == ["5"]  # a self-loop is a cycle too


def test_a_long_cycle_is_reported_once_and_capped(registry):
    """A 10,000-node cycle gives one short error (it used to list the cycle once per node: n^2 in size)."""
    n = 10_000
    prompt = {str(i): {"class_type": "Add", "inputs": {"a": [str((i - 1) % n), 0], "bias": 0}} for i in range(n)}
    prompt["out"] = {"class_type": "Collect", "inputs": {"value": ["0", 0], "label": ""}}
    result = validate_prompt(prompt, registry)
    assert not result.ok
    assert list(result.node_errors) == ["0"]
    (err,) = result.node_errors["0"]["errors"]
    assert err["extra_info"]["cycle_length"] == n and len(err["extra_info"]["cycle"]) == 20
    assert f"a cycle of {n} nodes" in err["details"] and err["details"].endswith("...")
    assert len(json.dumps(result.response())) < 5000


def test_literal_coercion_and_wrapped_values(registry):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": "12"}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0], "label": {"__value__": "x"}}},
    }
    result = validate_prompt(prompt, registry)
    assert result.ok
    assert result.workflow.nodes["1"].constants["value"] == 12
    assert result.workflow.nodes["2"].constants["label"] == "x"


def test_targets_limit_outputs(registry):
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 1}},
        "2": {"class_type": "Collect", "inputs": {"value": ["1", 0], "label": ""}},
        "3": {"class_type": "Collect", "inputs": {"value": ["1", 0], "label": ""}},
    }
    assert validate_prompt(prompt, registry, targets=["3"]).workflow.outputs == ["3"]
    assert validate_prompt(prompt, registry, targets=["1"]).error["type"] == "prompt_no_outputs"


def test_custom_check_inputs():
    from support.registry import make_registry

    registry = make_registry(builtin=False, packs={"nodegraph_nodes.utility": None})
    prompt = {
        "1": {"class_type": "StringFormat", "inputs": {"template": "hello {name}"}},
        "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}},
    }
    result = validate_prompt(prompt, registry)
    (err,) = result.node_errors["1"]["errors"]
    assert err["type"] == "custom_validation_failed" and "unknown placeholders ['name']" in err["details"]


def test_combo_and_boolean_coercion():
    from support.registry import make_registry

    registry = make_registry(builtin=False, packs={"nodegraph_nodes.utility": None})
    prompt = {
        "1": {"class_type": "IntMath", "inputs": {"a": 1, "op": "divide", "b": 2}},
        "2": {"class_type": "ShowText", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "PrimitiveBoolean", "inputs": {"value": "maybe"}},
        "4": {"class_type": "ShowText", "inputs": {"value": ["3", 0]}},
    }
    result = validate_prompt(prompt, registry)
    assert result.node_errors["1"]["errors"][0]["type"] == "value_not_in_list"
    assert result.node_errors["3"]["errors"][0]["type"] == "invalid_input_type"
    text = format_validation(result, prompt)
    assert "node 1 (IntMath" in text and "'divide' not in" in text and "affects output nodes: 2" in text
