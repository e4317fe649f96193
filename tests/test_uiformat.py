"""UI-format (editor) workflows convert to the exact API prompt the official frontend would queue."""

from __future__ import annotations

import copy

import pytest

from nodegraph.engine.uiformat import (
    ConversionProblem,
    is_api_format,
    is_ui_format,
    ui_to_api,
    widget_inputs,
)
from support.object_info import NODE_INFO, load_ui, node_info
from support.workflows import FRONTEND_TXT2IMG as TXT2IMG, frontend_txt2img as txt2img


def convert(name: str, info=node_info):
    return ui_to_api(load_ui(name), info)


def test_default_graph_schema_04_matches_the_frontend_prompt():
    result = convert("txt2img_v04.json")
    assert result.prompt == TXT2IMG
    assert result.problems == []
    # The control_after_generate value ("randomize") never reaches the prompt.
    assert "control_after_generate" not in result.prompt["3"]["inputs"]


def test_schema_1_link_objects_widget_sockets_and_titles():
    expected = txt2img()
    expected["4"]["inputs"]["ckpt_name"] = "sd_xl_base_1.0.safetensors"
    expected["5"]["inputs"] = {"width": 1024, "height": 1024, "batch_size": 1}
    expected["6"]["inputs"]["text"] = "a lighthouse on a cliff at dawn"
    expected["6"]["_meta"]["title"] = "Positive prompt"
    expected["7"]["inputs"]["text"] = "blurry, lowres"
    expected["7"]["_meta"]["title"] = "Negative prompt"
    expected["3"]["inputs"].update(seed=42, steps=25, cfg=6.5, sampler_name="dpmpp_2m", scheduler="karras")
    expected["9"]["inputs"]["filename_prefix"] = "lighthouse"
    result = convert("txt2img_v1.json")
    assert result.prompt == expected
    assert result.problems == []


def test_widget_converted_to_input_linked_link_wins_unlinked_keeps_value():
    expected = txt2img()
    expected["10"] = {"class_type": "PrimitiveInt", "inputs": {"value": 768}, "_meta": {"title": "Int"}}
    expected["5"]["inputs"]["width"] = ["10", 0]
    expected["3"]["inputs"]["seed"] = ["10", 0]
    result = convert("widget_converted.json")
    assert result.prompt == expected
    assert result.problems == []


def test_real_primitive_node_not_installed_is_reported_and_its_links_removed():
    info = {k: v for k, v in NODE_INFO.items() if k != "PrimitiveInt"}.get
    result = convert("widget_converted.json", info)
    expected = txt2img()
    # The frontend writes the link over the widget value, then drops links to absent nodes: no value is left.
    del expected["5"]["inputs"]["width"]
    del expected["3"]["inputs"]["seed"]
    assert result.prompt == expected
    assert result.problems == [ConversionProblem("10", "PrimitiveInt", "PrimitiveInt", "node type not installed")]


def test_muted_node_is_left_out_and_inputs_linked_to_it_removed():
    expected = txt2img()
    expected["11"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "muted_branch"},
                      "_meta": {"title": "Save Image"}}
    result = convert("muted.json")
    assert result.prompt == expected
    assert result.problems == []


def test_bypassed_chain_and_reroute_pass_the_upstream_link_through():
    result = convert("bypass_chain.json")
    assert result.prompt == TXT2IMG
    assert result.problems == []


def test_bypass_uses_first_input_of_the_requested_type_not_the_same_slot():
    workflow = load_ui("txt2img_v04.json")
    sampler = next(node for node in workflow["nodes"] if node["id"] == 3)
    sampler["mode"] = 4
    result = ui_to_api(workflow, node_info)
    expected = txt2img()
    del expected["3"]
    # KSampler's LATENT output maps to its latent_image input (slot 3), not its MODEL input (slot 0).
    expected["8"]["inputs"]["samples"] = ["5", 0]
    assert result.prompt == expected


def test_bypass_without_a_matching_input_leaves_the_input_unconnected():
    workflow = load_ui("loadimage.json")
    encoder = next(node for node in workflow["nodes"] if node["id"] == 11)
    encoder["mode"] = 4  # VAEEncode has IMAGE and VAE inputs; nothing fits the LATENT the sampler wants
    result = ui_to_api(workflow, node_info)
    assert "latent_image" not in result.prompt["3"]["inputs"]
    assert "11" not in result.prompt


def test_reroute_chain_resolves_to_the_real_producer():
    result = convert("reroute_chain.json")
    assert result.prompt == TXT2IMG
    assert result.problems == []


def test_primitive_node_value_goes_to_every_target_and_never_to_the_prompt():
    expected = txt2img()
    expected["5"]["inputs"].update(width=640, height=640)
    expected["3"]["inputs"]["steps"] = 30  # through a Reroute
    result = convert("primitive.json")
    assert result.prompt == expected
    assert result.problems == []


def test_note_and_markdown_note_are_dropped_silently():
    result = convert("notes.json")
    assert result.prompt == TXT2IMG
    assert result.problems == []


def test_link_to_absent_node_is_removed_and_reported():
    expected = txt2img()
    del expected["8"]["inputs"]["vae"]
    result = convert("absent_link.json")
    assert result.prompt == expected
    assert result.problems == [ConversionProblem(
        "8", "VAEDecode", "VAE Decode", "input 'vae' is linked to node 40, which is not in the workflow")]


def test_unknown_node_type_is_reported_and_left_out():
    expected = txt2img()
    del expected["9"]["inputs"]["images"]
    result = convert("unknown_node.json")
    assert result.prompt == expected
    assert result.problems == [
        ConversionProblem("10", "FancyUpscaler", "Fancy upscale 4x", "node type not installed")]


def test_bypassed_or_muted_unknown_node_is_not_a_problem():
    workflow = load_ui("unknown_node.json")
    fancy = next(node for node in workflow["nodes"] if node["id"] == 10)
    fancy["mode"] = 4
    result = ui_to_api(workflow, node_info)
    assert result.prompt == TXT2IMG
    assert result.problems == []


def test_load_image_upload_value_is_skipped():
    expected = txt2img()
    del expected["5"]
    expected["10"] = {"class_type": "LoadImage", "inputs": {"image": "in.png"}, "_meta": {"title": "Load Image"}}
    expected["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]},
                      "_meta": {"title": "VAE Encode"}}
    expected["3"]["inputs"].update(latent_image=["11", 0], denoise=0.6)
    result = convert("loadimage.json")
    assert result.prompt == expected
    assert result.problems == []


def test_widgets_values_as_dict_keyed_by_input_name():
    expected = txt2img()
    expected["6"]["inputs"]["text"] = "a castle in the clouds"
    expected["5"]["inputs"] = {"width": 768, "height": 512, "batch_size": 2}
    expected["3"]["inputs"].update(seed=5, steps=12, cfg=7.5, sampler_name="euler_ancestral", scheduler="karras")
    expected["9"]["inputs"]["filename_prefix"] = "castle"
    result = convert("widgets_dict.json")
    assert result.prompt == expected
    assert result.problems == []


def test_subgraph_is_flattened_with_colon_ids_and_promoted_widget():
    expected = txt2img()
    del expected["6"], expected["7"]
    expected["15:1"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in the snow", "clip": ["4", 1]},
                        "_meta": {"title": "CLIP Text Encode (Prompt)"}}
    expected["15:2"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, lowres", "clip": ["4", 1]},
                        "_meta": {"title": "Negative"}}
    expected["3"]["inputs"].update(positive=["15:1", 0], negative=["15:2", 0])
    expected["9"]["inputs"]["filename_prefix"] = "fox"
    result = convert("subgraph.json")
    assert result.prompt == expected
    assert result.problems == []


def test_subgraph_instance_input_linked_from_outside_wins_over_its_widget():
    workflow = load_ui("subgraph.json")
    workflow["nodes"].append({"id": 16, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                              "outputs": [{"name": "STRING", "type": "STRING", "links": [10]}],
                              "widgets_values": ["an owl at night"]})
    workflow["links"].append({"id": 10, "origin_id": 16, "origin_slot": 0, "target_id": 15, "target_slot": 1,
                              "type": "STRING"})
    instance = next(node for node in workflow["nodes"] if node["id"] == 15)
    instance["inputs"][1]["link"] = 10
    result = ui_to_api(workflow, node_info)
    assert result.prompt["15:1"]["inputs"]["text"] == "an owl at night"


def test_nested_subgraph_ids_are_colon_paths():
    workflow = load_ui("subgraph.json")
    inner_id = "5e0c4a3b-8f1d-4d2e-9c6a-1b2c3d4e5f60"
    outer_id = "7a7a7a7a-0000-4000-8000-00000000abcd"
    # Wrap the prompts subgraph instance into an outer subgraph that just passes CLIP in and both outputs out.
    outer = {
        "id": outer_id, "name": "Wrapper", "version": 1,
        "inputs": [{"name": "clip", "type": "CLIP", "linkIds": [201]}],
        "outputs": [{"name": "positive", "type": "CONDITIONING", "linkIds": [202]},
                    {"name": "negative", "type": "CONDITIONING", "linkIds": [203]}],
        "nodes": [{"id": 7, "type": inner_id, "mode": 0,
                   "inputs": [{"name": "clip", "type": "CLIP", "link": 201},
                              {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": None}],
                   "outputs": [{"name": "positive", "type": "CONDITIONING", "links": [202]},
                               {"name": "negative", "type": "CONDITIONING", "links": [203]}],
                   "widgets_values": ["a heron"]}],
        "links": [[201, -10, 0, 7, 0, "CLIP"], [202, 7, 0, -20, 0, "CONDITIONING"],
                  [203, 7, 1, -20, 1, "CONDITIONING"]],  # links as 6-lists are read too
    }
    workflow["definitions"]["subgraphs"].append(outer)
    instance = next(node for node in workflow["nodes"] if node["id"] == 15)
    instance["type"] = outer_id
    instance["inputs"] = instance["inputs"][:1]
    instance["widgets_values"] = []
    result = ui_to_api(workflow, node_info)
    assert result.prompt["15:7:1"]["inputs"] == {"text": "a heron", "clip": ["4", 1]}
    assert result.prompt["15:7:2"]["inputs"] == {"text": "blurry, lowres", "clip": ["4", 1]}
    assert result.prompt["3"]["inputs"]["positive"] == ["15:7:1", 0]
    assert result.prompt["3"]["inputs"]["negative"] == ["15:7:2", 0]
    assert result.problems == []


def test_bypassed_subgraph_instance_passes_through_by_type():
    workflow = load_ui("subgraph.json")
    instance = next(node for node in workflow["nodes"] if node["id"] == 15)
    instance["mode"] = 4
    result = ui_to_api(workflow, node_info)
    assert not any(node_id.startswith("15") for node_id in result.prompt)
    # No input of the instance is CONDITIONING, so nothing passes through.
    assert "positive" not in result.prompt["3"]["inputs"]


def test_muted_subgraph_instance_leaves_out_its_inner_nodes():
    workflow = load_ui("subgraph.json")
    instance = next(node for node in workflow["nodes"] if node["id"] == 15)
    instance["mode"] = 2
    result = ui_to_api(workflow, node_info)
    assert not any(node_id.startswith("15") for node_id in result.prompt)
    assert "positive" not in result.prompt["3"]["inputs"] and "negative" not in result.prompt["3"]["inputs"]
    assert result.problems == []


def test_legacy_group_node_is_reported_with_advice():
    workflow = load_ui("notes.json")
    workflow["nodes"].append({"id": 30, "type": "workflow>Upscale group", "mode": 0, "inputs": [], "outputs": []})
    workflow["extra"]["groupNodes"] = {"Upscale group": {"nodes": [], "links": []}}
    result = ui_to_api(workflow, node_info)
    assert result.prompt == TXT2IMG
    assert result.problems == [ConversionProblem(
        "30", "workflow>Upscale group", "workflow>Upscale group",
        "legacy group node: not supported, convert it to a subgraph in the editor")]


def test_self_containing_subgraph_is_reported_not_expanded_forever():
    workflow = load_ui("subgraph.json")
    definition = workflow["definitions"]["subgraphs"][0]
    definition["nodes"].append({"id": 3, "type": definition["id"], "mode": 0, "inputs": [], "outputs": []})
    result = ui_to_api(workflow, node_info)
    assert [p.message for p in result.problems] == ["subgraph contains itself; its inner nodes were left out"]
    assert result.problems[0].node_id == "15:3"


def test_promoted_proxy_widgets_set_inner_widget_values():
    workflow = load_ui("subgraph.json")
    instance = next(node for node in workflow["nodes"] if node["id"] == 15)
    instance["properties"]["proxyWidgets"] = [["-1", "text"], ["2", "text"]]
    instance["widgets_values"] = ["a crane", "ugly"]
    result = ui_to_api(workflow, node_info)
    assert result.prompt["15:1"]["inputs"]["text"] == "a crane"
    assert result.prompt["15:2"]["inputs"]["text"] == "ugly"


def test_reroute_loop_is_reported_not_followed_forever():
    workflow = load_ui("reroute_chain.json")
    # Close 21 -> 22 -> 21.
    workflow["links"].append([13, 22, 0, 21, 0, "VAE"])
    reroute = next(node for node in workflow["nodes"] if node["id"] == 21)
    reroute["inputs"][0]["link"] = 13
    result = ui_to_api(workflow, node_info)
    assert "vae" not in result.prompt["8"]["inputs"]
    assert [p.node_id for p in result.problems] == ["8"]
    assert "loop" in result.problems[0].message


def test_legacy_seed_control_value_without_declared_flag():
    legacy = copy.deepcopy(NODE_INFO)
    del legacy["KSampler"]["input"]["required"]["seed"][1]["control_after_generate"]
    with_control = load_ui("txt2img_v04.json")
    assert ui_to_api(with_control, legacy.get).prompt == TXT2IMG
    without_control = load_ui("txt2img_v04.json")
    sampler = next(node for node in without_control["nodes"] if node["id"] == 3)
    sampler["widgets_values"] = [156680208700286, 20, 8, "euler", "normal", 1]
    assert ui_to_api(without_control, legacy.get).prompt == TXT2IMG


def test_missing_widget_values_take_widget_defaults():
    info = NODE_INFO["KSampler"]
    assert widget_inputs(info, [7]) == {"seed": 7, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                                        "scheduler": "normal", "denoise": 1.0}
    assert widget_inputs(info, None)["seed"] == 0


def test_optional_widgets_follow_required_ones_and_force_input_is_not_a_widget():
    info = {
        "input": {"required": {"image": [["a.png"], {"image_upload": True}], "channel": [["alpha", "red"]],
                               "strength": ["FLOAT", {"forceInput": True}]},
                  "optional": {"mode": [["fast", "slow"]], "label": ["STRING", {}]}},
        "input_order": {"required": ["image", "channel", "strength"], "optional": ["mode", "label"]},
    }
    # The upload button's value sits after the required widgets, before the optional ones.
    values = ["a.png", "red", "image", "slow", "hello"]
    assert widget_inputs(info, values) == {"image": "a.png", "channel": "red", "mode": "slow", "label": "hello"}


def test_array_widget_values_are_wrapped():
    workflow = load_ui("txt2img_v04.json")
    encoder = next(node for node in workflow["nodes"] if node["id"] == 7)
    encoder["widgets_values"] = [["a", "b"]]
    result = ui_to_api(workflow, node_info)
    assert result.prompt["7"]["inputs"]["text"] == {"__value__": ["a", "b"]}


def test_format_detection():
    assert is_api_format(TXT2IMG)
    assert not is_api_format({})
    assert not is_api_format(load_ui("txt2img_v04.json"))
    assert is_ui_format(load_ui("txt2img_v04.json"))
    assert is_ui_format(load_ui("txt2img_v1.json"))
    assert not is_ui_format(TXT2IMG)
    assert not is_ui_format([])
    with pytest.raises(ValueError, match="not a UI-format workflow"):
        ui_to_api(TXT2IMG, node_info)


# --- api_to_ui: the inverse, used for the example workflows and `nodegraph convert --to ui` --------------------------


def test_api_to_ui_round_trips_txt2img():
    from nodegraph.engine.uiformat import api_to_ui

    ui = api_to_ui(TXT2IMG, node_info)
    assert ui["version"] == 0.4 and len(ui["nodes"]) == len(TXT2IMG) and len(ui["links"]) == 9
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"][:2] == [TXT2IMG["3"]["inputs"]["seed"], "fixed"]
    columns = {n["id"]: n["pos"][0] for n in ui["nodes"]}
    assert columns[4] < columns[6] < columns[3] < columns[8] < columns[9]  # laid out left to right
    back = ui_to_api(ui, node_info)
    assert back.problems == []
    assert back.prompt == TXT2IMG


def test_api_to_ui_keeps_linked_widgets_and_titles():
    from nodegraph.engine.uiformat import api_to_ui

    prompt = {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}, "_meta": {"title": "Seed source"}},
        **{k: v for k, v in TXT2IMG.items()},
    }
    prompt["3"] = {**TXT2IMG["3"], "inputs": {**TXT2IMG["3"]["inputs"], "seed": ["1", 0]}}
    ui = api_to_ui(prompt, node_info)
    assert next(n for n in ui["nodes"] if n["id"] == 1)["title"] == "Seed source"
    assert ui_to_api(ui, node_info).prompt == prompt
