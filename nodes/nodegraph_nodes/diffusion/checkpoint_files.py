"""Load Stable Diffusion checkpoints, VAEs and ControlNets from disk, offline, into diffusers modules.

Formats:
- single-file `.safetensors` in the original ("LDM") layout, as ComfyUI / A1111 users hold them. The family is read
  from the header (`nodegraph.config`, written for our tiny test models) or recognised from keys and shapes
  (`families.py`); the weights are converted with diffusers' own converters (`diffusers.loaders.single_file_utils`)
  into models built from the bundled config; loading is strict, so a file that does not fit says what is wrong.
- diffusers folders (`model_index.json` for checkpoints, `config.json` for a lone VAE / ControlNet).
- the format is read from the content, whatever the extension (`weights_files`): pickle content (torch zip or
  legacy) is refused (unpickling can run code) unless the caller opts in with `allow_pickle=True`, and even then
  only through `torch.load(weights_only=True)`. The nodes never opt in: checkpoints are never unpickled.
Nothing here contacts a model hub: configs are bundled and tokenizers are built from the bundled vocabulary.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    DIFFUSERS_TO_LDM_MAPPING,
    convert_controlnet_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from safetensors import SafetensorError, safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from . import unclip, weights_files
from .controlnet_shapes import ControlNetShapeError, controlnet_config_from_shapes, is_diffusers_controlnet
from .families import (
    CONTROLNET_FAMILIES,
    CONTROLNET_PREFIX,
    FAMILIES,
    UNET_IN_KEY,
    Family,
    TextEncoderSpec,
    bundled_config,
    bundled_json,
    describe_keys,
    detect_controlnet_family,
    detect_family,
    detect_folder_family,
)
from .keymap import METADATA_KEY
from .tiny import Components
from .tokenizer import clip_tokenizer, tokenizer_from_spec

SUPPORTED = (
    "safetensors single files (any extension) in the original layout (" + ", ".join(FAMILIES) + "), "
    "diffusers folders with model_index.json"
)
# the VAE architecture is the same in SD1, SD2 and SDXL; only the latent scale differs, and that is the family's
STANDALONE_VAE_FOLDER = "sd15"
_NODEGRAPH_FAMILY = "_nodegraph_family"  # model_index.json key naming the family of a folder we wrote

TextEncoder = CLIPTextModel | CLIPTextModelWithProjection


class CheckpointError(ValueError):
    """A model file that cannot be loaded, with what was found and what is supported."""


# --- reading files --------------------------------------------------------------------------------------------


class SingleFile:
    """A weights file opened for inspection: key -> shape, header metadata, and tensors on demand.

    The format is decided by the file's content (`weights_files.sniff_format`), never by its extension: a
    safetensors file named `.ckpt` loads, and pickle content is refused under any name unless `allow_pickle`.
    """

    def __init__(self, path: str | Path, allow_pickle: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such file")
        try:
            kind = weights_files.sniff_format(self.path)
            if kind == "safetensors":
                self.shapes: dict[str, tuple[int, ...]] = weights_files.tensor_shapes(self.path)
                self.metadata: dict[str, str] = weights_files.read_metadata(self.path)
                self._tensors: dict[str, torch.Tensor] | None = None
            elif kind == "unknown":
                raise CheckpointError(
                    f"{self.path}: not a model file this loader reads (its content is neither safetensors nor a "
                    f"torch pickle); supported: {SUPPORTED}"
                )
            else:
                self._tensors = weights_files.load_state_dict(self.path, allow_pickle=allow_pickle)
                self.metadata = {}
                self.shapes = {k: tuple(v.shape) for k, v in self._tensors.items()}
        except weights_files.WeightsFileError as error:
            raise CheckpointError(str(error)) from error

    def header(self) -> dict[str, Any] | None:
        """Our own config record (tiny models), or None for files written by anyone else."""
        raw = self.metadata.get(METADATA_KEY)
        return json.loads(raw) if raw else None

    def tensor(self, key: str) -> torch.Tensor:
        return self.tensors()[key] if self._tensors is not None else self._read([key])[key]

    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = self._read(list(self.shapes))
        return self._tensors

    def _read(self, keys: list[str]) -> dict[str, torch.Tensor]:
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in keys}
        except SafetensorError as error:
            raise CheckpointError(f"{self.path}: damaged safetensors file: {error}") from error


# --- building modules from converted state dicts ----------------------------------------------------------------


def _cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return dict(state)
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _empty(factory: Callable[[], torch.nn.Module]) -> Any:
    """`factory()` with its parameters on the meta device: no memory, no random initialisation."""
    with init_empty_weights():
        return factory()


def _assemble(
    what: str, model: Any, state: Mapping[str, torch.Tensor], source: Path, dtype: torch.dtype | None
) -> Any:
    """Give `model` (built by `_empty`) every parameter from `state`, strictly.

    Missing, unexpected or misshapen tensors mean the file does not hold the architecture the config describes;
    the error names them rather than leaving random or meta weights behind.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = [f"{k} {list(state[k].shape)} != {list(s)}" for k, s in expected.items()
                 if k in state and tuple(state[k].shape) != s]
    if missing or unexpected or misshapen:
        problems = [
            f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
            f"{len(misshapen)} of another shape (e.g. {misshapen[:2]})" if misshapen else "",
        ]
        raise CheckpointError(
            f"{source}: the {what} weights do not fit its config: " + "; ".join(p for p in problems if p)
        )
    model.load_state_dict(_cast(state, dtype), strict=True, assign=True)
    on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise CheckpointError(f"{source}: the {what} has tensors without values: {on_meta[:3]}")
    return model.eval()


def _text_config(config: Mapping[str, Any]) -> CLIPTextConfig:
    return CLIPTextConfig.from_dict({k: v for k, v in config.items() if k != "architectures"})


def _text_encoder_state(
    spec: TextEncoderSpec, model: TextEncoder, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The text encoder's weights in transformers' naming, from the single-file keys under `spec.prefix`."""
    if spec.layout == "open_clip":
        converted = convert_open_clip_checkpoint(model, state, prefix=spec.prefix)
    else:
        converted = {}
        for key, value in state.items():
            if key.startswith(spec.prefix):
                inner = key[len(spec.prefix):]
                # older SD1 files store the CLIP text model without transformers' "text_model." level
                converted[inner if inner.startswith("text_model.") else "text_model." + inner] = value
    converted.pop("text_model.embeddings.position_ids", None)  # a constant buffer some files carry
    if not hasattr(model, "text_model"):  # transformers >= 5.6 CLIPTextModel has no text_model level
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    if not isinstance(model, CLIPTextModelWithProjection):
        converted.pop("text_projection.weight", None)  # OpenCLIP always has one; CLIPTextModel does not use it
    return converted


def _text_encoder(
    spec: TextEncoderSpec, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], source: Path,
    dtype: torch.dtype | None,
) -> TextEncoder:
    text_config = _text_config(config)
    cls = CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel
    model = _empty(lambda: cls(text_config))
    return _assemble(spec.subfolder, model, _text_encoder_state(spec, model, state), source, dtype)


def _components_from_single_file(
    file: SingleFile,
    family: Family,
    configs: Mapping[str, Mapping[str, Any]],
    tokenizers: list[CLIPTokenizer],
    scheduler_config: dict[str, Any],
    dtype: torch.dtype | None,
) -> Components:
    state = file.tensors()
    unet_config, vae_config = dict(configs["unet"]), dict(configs["vae"])
    unet = _assemble(
        "unet", _empty(lambda: UNet2DConditionModel.from_config(unet_config)),
        convert_ldm_unet_checkpoint(state, unet_config), file.path, dtype,
    )
    vae = _assemble(
        "vae", _empty(lambda: AutoencoderKL.from_config(vae_config)), convert_ldm_vae_checkpoint(state, vae_config),
        file.path, dtype,
    )
    encoders = [
        _text_encoder(spec, configs[spec.subfolder], state, file.path, dtype) for spec in family.text_encoders
    ]
    return Components(family.name, unet, vae, encoders, tokenizers, scheduler_config)


# --- public loaders -------------------------------------------------------------------------------------------


def read_checkpoint_file(path: str | Path, dtype: torch.dtype | None = None, allow_pickle: bool = False) -> Components:
    """A whole Stable Diffusion checkpoint (UNet, VAE, text encoders, tokenizers, scheduler config).

    `path`: an original-layout single file (.safetensors) or a diffusers folder (with model_index.json).
    `dtype`: cast floating-point weights to it; None keeps the stored dtypes.
    `allow_pickle`: read pickle content with `torch.load(weights_only=True)` instead of refusing it.
    """
    path = Path(path)
    if path.is_dir():
        return _load_checkpoint_folder(path, dtype)
    file = SingleFile(path, allow_pickle)
    header = file.header()
    if header is not None:
        if header.get("kind") != "checkpoint":
            raise CheckpointError(f"{path}: this is a {header.get('kind')} file, not a checkpoint")
        family = FAMILIES[header["family"]]
        configs = {"unet": header["unet"], "vae": header["vae"], **header["text_encoders"]}
        tokenizers = [tokenizer_from_spec(header["tokenizers"][spec.subfolder]) for spec in family.text_encoders]
        scheduler = dict(header["scheduler"])
        preview = header.get("latent_rgb")
    else:
        preview = None
        found = detect_family(file.shapes, file.tensor)
        if found is None:
            raise CheckpointError(
                f"{path}: not a checkpoint of a supported family. Found {describe_keys(file.shapes)}. "
                f"Supported: " + "; ".join(f"{f.name}: {f.description}" for f in FAMILIES.values())
                + ". ControlNets load with read_controlnet_file, VAEs with read_vae_file."
            )
        family = found
        configs = {c: family.config(c) for c in ("unet", "vae", *(s.subfolder for s in family.text_encoders))}
        if UNET_IN_KEY in file.shapes:  # inpainting UNets take 9 channels: the file says which kind it holds
            configs["unet"] = {**configs["unet"], "in_channels": file.shapes[UNET_IN_KEY][1]}
        configs["unet"] = unclip.unet_config_for(configs["unet"], file.shapes)  # unCLIP: an image-embedding input
        tokenizers = [clip_tokenizer(pad_token=spec.pad_token) for spec in family.text_encoders]
        scheduler = family.config("scheduler")
    components = _components_from_single_file(file, family, configs, tokenizers, scheduler, dtype)
    if preview is not None:
        components.latent_rgb = (preview["factors"], preview["bias"])
    elif header is not None:  # written by nodegraph with a VAE of its own but no preview factors: fit them now
        from .preview import fit_vae_latent_rgb

        components.latent_rgb = fit_vae_latent_rgb(components.vae)
    return components


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _load_checkpoint_folder(folder: Path, dtype: torch.dtype | None) -> Components:
    index = _read_json(folder / "model_index.json")
    if not index:
        raise CheckpointError(f"{folder}: a folder checkpoint needs a diffusers model_index.json; supported: {SUPPORTED}")
    configs = {
        "model_index": index,
        "unet": _read_json(folder / "unet" / "config.json"),
        "scheduler": _read_json(folder / "scheduler" / "scheduler_config.json"),
    }
    family = FAMILIES.get(index.get(_NODEGRAPH_FAMILY, "")) or detect_folder_family(configs)
    if family is None:
        raise CheckpointError(
            f"{folder}: unrecognised diffusers pipeline {index.get('_class_name')!r} "
            f"(unet cross_attention_dim {configs['unet'].get('cross_attention_dim')}); supported: {', '.join(FAMILIES)}"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kwargs).eval()
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kwargs).eval()
    encoders: list[TextEncoder] = []
    tokenizers: list[CLIPTokenizer] = []
    for spec in family.text_encoders:
        cls = CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel
        encoders.append(cls.from_pretrained(folder / spec.subfolder, **kwargs).eval())
        tokenizer_dir = folder / spec.subfolder.replace("text_encoder", "tokenizer")
        tokenizers.append(
            CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
            if tokenizer_dir.is_dir() else clip_tokenizer(pad_token=spec.pad_token)
        )
    scheduler = configs["scheduler"] or family.config("scheduler")
    return Components(family.name, unet, vae, encoders, tokenizers, scheduler)


def read_vae_file(path: str | Path, dtype: torch.dtype | None = None, allow_pickle: bool = False) -> AutoencoderKL:
    """A standalone VAE: an original-layout or diffusers-key single file, or a diffusers folder.

    Real VAE files carry no config; SD1, SD2 and SDXL VAEs share one architecture, so the bundled one is used.
    Note the latent scale belongs to the model family (`Family.latent_scale`), not to a swapped-in VAE.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
        kwargs = {"torch_dtype": dtype} if dtype is not None else {}
        return AutoencoderKL.from_pretrained(folder, local_files_only=True, **kwargs).eval()
    file = SingleFile(path, allow_pickle)
    header = file.header()
    if header is not None and header.get("kind") not in ("vae", "checkpoint"):
        raise CheckpointError(f"{path}: this is a {header.get('kind')} file, not a VAE")
    config = dict(header["vae"]) if header else bundled_config(STANDALONE_VAE_FOLDER, "vae")
    state = file.tensors()
    if "encoder.down_blocks.0.resnets.0.norm1.weight" in state:  # already diffusers keys
        converted = state
    elif any(k.startswith("encoder.conv_in.") or k.startswith("first_stage_model.encoder.conv_in.") for k in state):
        converted = convert_ldm_vae_checkpoint(state, config)
    else:
        raise CheckpointError(
            f"{path}: no VAE found. Found {describe_keys(file.shapes)}. Supported: a VAE file in the original "
            "layout (encoder.down.*, decoder.up.*), with diffusers keys (encoder.down_blocks.*), or a diffusers folder."
        )
    return _assemble("vae", _empty(lambda: AutoencoderKL.from_config(config)), converted, file.path, dtype)


def read_controlnet_file(
    path: str | Path, dtype: torch.dtype | None = None, allow_pickle: bool = False
) -> ControlNetModel:
    """A ControlNet: an original-layout single file (`control_model.*` or unprefixed), a single file with diffusers
    keys (a diffusers ControlNetModel's weights file, no config needed: the architecture is read off the tensor
    shapes, `controlnet_shapes`), or a diffusers folder."""
    path = Path(path)
    if path.is_dir():
        kwargs = {"torch_dtype": dtype} if dtype is not None else {}
        return ControlNetModel.from_pretrained(path, local_files_only=True, **kwargs).eval()
    file = SingleFile(path, allow_pickle)
    header = file.header()
    plain_shapes = {k.removeprefix(CONTROLNET_PREFIX): s for k, s in file.shapes.items()}
    if header is not None:
        if header.get("kind") != "controlnet":
            raise CheckpointError(f"{path}: this is a {header.get('kind')} file, not a ControlNet")
        config = dict(header["controlnet"])
    elif is_diffusers_controlnet(plain_shapes):
        try:
            config = controlnet_config_from_shapes(plain_shapes)
        except ControlNetShapeError as error:
            raise CheckpointError(f"{path}: a ControlNet with diffusers keys, but {error}") from error
        state = {k.removeprefix(CONTROLNET_PREFIX): v for k, v in file.tensors().items()}
        return _assemble("controlnet", _empty(lambda: ControlNetModel.from_config(config)), state, file.path, dtype)
    else:
        family = detect_controlnet_family(file.shapes)
        if family is None:
            raise CheckpointError(
                f"{path}: not a ControlNet of a supported kind. Found {describe_keys(file.shapes)}. Supported: "
                + "; ".join(f"{f.name}: {f.description}" for f in CONTROLNET_FAMILIES.values())
                + " in the original layout, or any Stable Diffusion ControlNet with diffusers keys."
            )
        config = family.config()
    state = file.tensors()
    if "controlnet_cond_embedding.conv_in.weight" in state:  # diffusers keys with our header: no conversion
        return _assemble("controlnet", _empty(lambda: ControlNetModel.from_config(config)), state, file.path, dtype)
    converted = convert_controlnet_checkpoint(state, config)
    if config.get("addition_embed_type") == "text_time" and "add_embedding.linear_1.weight" not in converted:
        # diffusers' converter maps SDXL's label_emb for UNets but not for original-layout ControlNets
        plain = {k.removeprefix(CONTROLNET_PREFIX): v for k, v in state.items()}
        for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
            converted[new] = plain[old]
    return _assemble("controlnet", _empty(lambda: ControlNetModel.from_config(config)), converted, file.path, dtype)


# --- tiny models on disk, for tests and demos -----------------------------------------------------------------


def write_diffusers_folder(components: Components, folder: str | Path) -> Path:
    """Save `components` as a diffusers folder (model_index.json, one subfolder per part, tokenizers included)."""
    folder = Path(folder)
    family = FAMILIES[components.family]
    index = {**bundled_json(family.config_folder, "model_index.json"), _NODEGRAPH_FAMILY: family.name}
    folder.mkdir(parents=True, exist_ok=True)
    components.unet.save_pretrained(folder / "unet")
    components.vae.save_pretrained(folder / "vae")
    for spec, encoder, tokenizer in zip(
        family.text_encoders, components.text_encoders, components.tokenizers, strict=True
    ):
        encoder.save_pretrained(folder / spec.subfolder)
        tokenizer.save_pretrained(folder / spec.subfolder.replace("text_encoder", "tokenizer"))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(components.scheduler_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder
