"""weights_files: the format of a weights file is decided by its content, and pickles are read only when allowed,
only with torch's restricted unpickler."""
from __future__ import annotations

import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from nodegraph_nodes.diffusion.weights_files import (
    WeightsFileError,
    load_pickle_object,
    load_state_dict,
    read_metadata,
    sniff_format,
)

WEIGHTS = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.bias": torch.tensor([1.5, -2.0])}


def _same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize("name", ["w.safetensors", "w.ckpt", "w.pt", "w.bin", "w"])
def test_safetensors_content_loads_whatever_the_extension(tmp_path, name):
    path = tmp_path / name
    save_file(WEIGHTS, str(path), metadata={"note": "hello"})
    assert sniff_format(path) == "safetensors"
    _same(load_state_dict(path, allow_pickle=False), WEIGHTS)
    assert read_metadata(path) == {"note": "hello"}


@pytest.mark.parametrize("zipped", [True, False])
@pytest.mark.parametrize("name", ["w.ckpt", "w.safetensors", "w.pth"])
def test_pickle_content_is_refused_unless_allowed(tmp_path, zipped, name):
    path = tmp_path / name
    torch.save(WEIGHTS, path, _use_new_zipfile_serialization=zipped)
    assert sniff_format(path) == ("pickle-zip" if zipped else "pickle")
    with pytest.raises(WeightsFileError, match=r"is a pickle.*Convert it to \.safetensors"):
        load_state_dict(path, allow_pickle=False)
    _same(load_state_dict(path, allow_pickle=True), WEIGHTS)
    assert read_metadata(path) == {}


@pytest.mark.parametrize("wrapper", ["state_dict", "params_ema", "params"])
def test_common_wrappers_are_unwrapped(tmp_path, wrapper):
    path = tmp_path / "w.pth"
    torch.save({wrapper: WEIGHTS, "epoch": 3, "global_step": 1200}, path)
    _same(load_state_dict(path, allow_pickle=True), WEIGHTS)


def test_params_ema_is_preferred_over_params(tmp_path):
    path = tmp_path / "esrgan.pth"
    other = {k: v + 1 for k, v in WEIGHTS.items()}
    torch.save({"params": other, "params_ema": WEIGHTS}, path)
    _same(load_state_dict(path, allow_pickle=True), WEIGHTS)


def test_a_plain_state_dict_with_a_key_named_params_is_not_unwrapped(tmp_path):
    path = tmp_path / "w.pt"
    weights = {**WEIGHTS, "params": torch.zeros(1)}
    torch.save(weights, path)
    _same(load_state_dict(path, allow_pickle=True), weights)


def test_nested_containers_are_flattened_and_scalars_dropped(tmp_path):
    path = tmp_path / "embedding.pt"
    vector = torch.randn(2, 8)
    obj = {"string_to_token": {"*": 265}, "string_to_param": {"*": vector}, "name": "cat", "step": 10}
    torch.save(obj, path)
    got = load_state_dict(path, allow_pickle=True)
    assert list(got) == ["string_to_param.*"] and torch.equal(got["string_to_param.*"], vector)
    raw = load_pickle_object(path, allow_pickle=True)
    assert raw["string_to_token"] == {"*": 265} and raw["name"] == "cat"


class _Evil:
    # exec, not print: Ray (imported by other tests in the same process) replaces builtins.print with its own.
    def __reduce__(self):
        return (exec, ("print('unpickled!')",))


@pytest.mark.parametrize("zipped", [True, False])
def test_pickles_with_code_are_refused_by_the_restricted_unpickler(tmp_path, zipped, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": WEIGHTS, "payload": _Evil()}, path, _use_new_zipfile_serialization=zipped)
    with pytest.raises(WeightsFileError, match=r"refused it \(Unsupported global: GLOBAL (builtins\.)?exec"):
        load_state_dict(path, allow_pickle=True)
    assert "unpickled!" not in capsys.readouterr().out


# torch warns that it was not written by torch.save (protocol 4): that is this test's point
@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")
def test_a_plain_pickle_is_sniffed_as_pickle(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert sniff_format(path) == "pickle"
    with pytest.raises(WeightsFileError, match="refused it"):
        load_state_dict(path, allow_pickle=True)


def test_truncated_safetensors_says_truncated(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(WEIGHTS, str(path))
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    cut_data = tmp_path / "cut_data.safetensors"
    cut_data.write_bytes(data[:-4])
    assert sniff_format(cut_data) == "safetensors"
    with pytest.raises(WeightsFileError, match="truncated safetensors file: its tensors need"):
        load_state_dict(cut_data, allow_pickle=False)
    cut_header = tmp_path / "cut_header.safetensors"
    cut_header.write_bytes(data[: 8 + length // 2])
    with pytest.raises(WeightsFileError, match="truncated safetensors file: its header says"):
        load_state_dict(cut_header, allow_pickle=False)
    with pytest.raises(WeightsFileError, match="truncated"):
        read_metadata(cut_header)


@pytest.mark.parametrize("zipped", [True, False])
def test_truncated_pickle_says_truncated(tmp_path, zipped):
    path = tmp_path / "w.ckpt"
    torch.save(WEIGHTS, path, _use_new_zipfile_serialization=zipped)
    path.write_bytes(path.read_bytes()[:120])
    with pytest.raises(WeightsFileError, match="truncated or damaged torch file"):
        load_state_dict(path, allow_pickle=True)


@pytest.mark.parametrize("content", [b"", b"hello world, not weights", b"PK\x03\x04" + b"\0" * 40, b"\x80\x09junk"])
def test_unknown_content(tmp_path, content):
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    assert sniff_format(path) == "unknown"
    with pytest.raises(WeightsFileError, match="not a weights file of a known format"):
        load_state_dict(path, allow_pickle=True)
    assert read_metadata(path) == {}


def test_missing_file(tmp_path):
    with pytest.raises(WeightsFileError, match="no such file"):
        load_state_dict(tmp_path / "nothing.safetensors", allow_pickle=False)
    with pytest.raises(WeightsFileError, match="cannot be read"):
        sniff_format(tmp_path / "nothing.safetensors")


def test_device_argument(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(WEIGHTS, str(path))
    assert all(t.device.type == "cpu" for t in load_state_dict(path, allow_pickle=False, device="cpu").values())
