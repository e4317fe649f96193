"""ComfyUI's string nodes and PreviewAny against hand-worked cases, and their published interface."""

import pytest

from nodegraph.engine import Folders, default_registry
from nodegraph.run_once import PromptRunner
from nodegraph_nodes import strings as s


def run(cls, **inputs):
    return cls().execute(**inputs)


def test_concatenate_substring_length():
    assert run(s.StringConcatenate, string_a="a red", string_b="circle", delimiter=" ") == ("a red circle",)
    assert run(s.StringConcatenate, string_a="ab", string_b="cd", delimiter="") == ("abcd",)
    assert run(s.StringSubstring, string="nodegraph", start=4, end=9) == ("graph",)
    assert run(s.StringSubstring, string="nodegraph", start=-5, end=-1) == ("grap",)
    assert run(s.StringSubstring, string="abc", start=2, end=1) == ("",)
    assert run(s.StringLength, string="héllo\n") == (6,)


@pytest.mark.parametrize("mode,expected", [
    ("UPPERCASE", "A RED CIRCLE"), ("lowercase", "a red circle"), ("Capitalize", "A red circle"),
    ("Title Case", "A Red Circle"),
])
def test_case_converter(mode, expected):
    assert run(s.CaseConverter, string="a rED circle", mode=mode) == (expected,)


def test_trim_replace_contains_compare():
    assert run(s.StringTrim, string="  x \n", mode="Both") == ("x",)
    assert run(s.StringTrim, string="  x \n", mode="Left") == ("x \n",)
    assert run(s.StringTrim, string="  x \n", mode="Right") == ("  x",)
    assert run(s.StringReplace, string="a.b.c", find=".", replace="::") == ("a::b::c",)  # literal, not a pattern
    assert run(s.StringContains, string="A Red Circle", substring="red", case_sensitive=True) == (False,)
    assert run(s.StringContains, string="A Red Circle", substring="red", case_sensitive=False) == (True,)
    assert run(s.StringCompare, string_a="Hello", string_b="he", mode="Starts With", case_sensitive=False) == (True,)
    assert run(s.StringCompare, string_a="Hello", string_b="he", mode="Starts With", case_sensitive=True) == (False,)
    assert run(s.StringCompare, string_a="Hello", string_b="llo", mode="Ends With", case_sensitive=True) == (True,)
    assert run(s.StringCompare, string_a="a", string_b="A", mode="Equal", case_sensitive=False) == (True,)


def test_regex_match():
    kw = dict(multiline=False, dotall=False)
    assert run(s.RegexMatch, string="Seed 42", regex_pattern=r"seed \d+", case_insensitive=True, **kw) == (True,)
    assert run(s.RegexMatch, string="Seed 42", regex_pattern=r"seed \d+", case_insensitive=False, **kw) == (False,)
    assert run(s.RegexMatch, string="x", regex_pattern="(", case_insensitive=True, **kw) == (False,)  # invalid
    assert run(s.RegexMatch, string="a\nb", regex_pattern="^b$", case_insensitive=True, multiline=True,
               dotall=False) == (True,)
    assert run(s.RegexMatch, string="a\nb", regex_pattern="a.b", case_insensitive=True, multiline=False,
               dotall=True) == (True,)


@pytest.mark.parametrize("mode,group,expected", [
    ("First Match", 1, "w=64"),
    ("All Matches", 1, "64\n32"),          # with groups: the first group of each match, one per line
    ("First Group", 2, "64"),
    ("First Group", 3, ""),                # no such group
    ("All Groups", 1, "w\nh"),
    ("All Groups", 0, "w=64\nh=32"),
])
def test_regex_extract(mode, group, expected):
    pattern = r"(w|h)=(\d+)" if mode != "All Matches" else r"[wh]=(\d+)"
    out = run(s.RegexExtract, string="size w=64 h=32", regex_pattern=pattern, mode=mode, case_insensitive=True,
              multiline=False, dotall=False, group_index=group)
    assert out == (expected,)


def test_regex_extract_all_matches_without_groups_and_invalid_pattern():
    kw = dict(case_insensitive=True, multiline=False, dotall=False, group_index=1)
    assert run(s.RegexExtract, string="a1 b22", regex_pattern=r"\d+", mode="All Matches", **kw) == ("1\n22",)
    assert run(s.RegexExtract, string="a1", regex_pattern="[", mode="First Match", **kw) == ("",)


def test_regex_replace():
    assert run(s.RegexReplace, string="a1 b22 c333", regex_pattern=r"(\d+)", replace=r"<\1>") == ("a<1> b<22> c<333>",)
    assert run(s.RegexReplace, string="a1 b22 c333", regex_pattern=r"\d+", replace="#", count=2) == ("a# b# c333",)
    assert run(s.RegexReplace, string="Aa", regex_pattern="a", replace="x", case_insensitive=False) == ("Ax",)
    with pytest.raises(ValueError, match="regex_pattern"):
        run(s.RegexReplace, string="x", regex_pattern="(", replace="")


def test_preview_any_text_forms():
    assert s.preview_text("hi") == "hi"
    assert s.preview_text(3) == "3" and s.preview_text(True) == "True" and s.preview_text(None) == "None"
    assert s.preview_text({"a": [1, 2]}) == '{\n    "a": [\n        1,\n        2\n    ]\n}'
    assert s.preview_text({1, 2}) == "{1, 2}"  # not JSON: its str()
    result = s.PreviewAny().execute(source=2.5)
    assert result.outputs == ("2.5",) and result.ui == {"text": ["2.5"]}


def test_object_info_matches_comfyui_interface():
    reg = default_registry()
    concat = s.StringConcatenate.object_info()
    assert concat["input_order"]["required"] == ["string_a", "string_b", "delimiter"]
    assert concat["input"]["required"]["string_a"] == ["STRING", {"default": "", "multiline": True}]
    assert concat["display_name"] == "Concatenate" and concat["category"] == "utils/string"
    extract = s.RegexExtract.object_info()
    assert extract["input_order"]["required"] == [
        "string", "regex_pattern", "mode", "case_insensitive", "multiline", "dotall", "group_index"]
    assert extract["input"]["required"]["mode"][0] == ["First Match", "All Matches", "First Group", "All Groups"]
    replace = s.RegexReplace.object_info()
    assert replace["input_order"]["optional"] == ["case_insensitive", "multiline", "dotall", "count"]
    assert s.StringLength.object_info()["output_name"] == ["length"]
    preview = s.PreviewAny.object_info()
    assert preview["output_node"] and preview["input"]["required"]["source"] == ["*"]
    for cls in s.NODES:
        assert reg.get(cls.type_name) is cls


def test_a_string_workflow_runs_through_the_engine(tmp_path):
    prompt = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "  A Red Circle "}},
        "2": {"class_type": "StringTrim", "inputs": {"string": ["1", 0], "mode": "Both"}},
        "3": {"class_type": "CaseConverter", "inputs": {"string": ["2", 0], "mode": "lowercase"}},
        "4": {"class_type": "StringConcatenate", "inputs": {"string_a": ["3", 0], "string_b": "on grey",
                                                             "delimiter": ", "}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }
    folders = Folders(models_dirs=[tmp_path], input_dir=tmp_path, output_dir=tmp_path, temp_dir=tmp_path)
    runner = PromptRunner(folders)
    result = runner.validate(prompt)
    assert result.ok, result.node_errors
    run = runner.run(result, "p")
    assert run.status == "success", run.error
    assert run.outputs["5"] == {"text": ["a red circle, on grey"]}
