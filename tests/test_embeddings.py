"""Textual-inversion embeddings in prompts: `embedding:name` (also inside weights), the file layouts people publish,
a missing name warned about and dropped, and parity with diffusers' `load_textual_inversion`."""
import logging

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

from nodegraph_nodes.diffusion.embeddings import EmbeddingLibrary, split_embeddings
from nodegraph_nodes.diffusion.checkpoint_files import read_checkpoint_file
from nodegraph_nodes.diffusion.text_encoding import SD1, SDXL, ClipTextEncoder
from support.sd import Runner, make_folders
from support.workflows import txt2img


def sd1_encoder(models_root, components=None):
    c = components or read_checkpoint_file(models_root / "checkpoints" / "tiny_sd1.safetensors")
    library = EmbeddingLibrary((str(models_root / "embeddings"),))
    return ClipTextEncoder(SD1, {"l": c.text_encoders[0]}, {"l": c.tokenizers[0]}, embeddings=library), c


def reference_pipeline(components, text_encoder, tokenizer):
    return StableDiffusionPipeline(
        vae=components.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=components.unet,
        scheduler=EulerDiscreteScheduler.from_config(components.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )


def reference_hidden(pipe, text, text_encoder, tokenizer, layer=None):
    """diffusers' way: the embedding's vectors are new tokens of an enlarged vocabulary."""
    prompt = pipe.maybe_convert_prompt(text, tokenizer)
    ids = tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        out = text_encoder(ids, output_hidden_states=True)
    return out.last_hidden_state if layer is None else out.hidden_states[layer]


def test_split_finds_references_at_word_starts_only():
    assert split_embeddings("a embedding:x, b") == [("text", "a "), ("embedding", "x, b")]
    assert split_embeddings("embedding:x") == [("embedding", "x")]
    assert split_embeddings("noembedding:x") == [("text", "noembedding:x")]
    assert split_embeddings("a\nembedding:y c") == [("text", "a\n"), ("embedding", "y c")]


@pytest.mark.parametrize("name", ["tiny_embedding", "tiny_embedding_a1111"])
def test_sd1_parity_with_diffusers_load_textual_inversion(models_root, name):
    encoder, components = sd1_encoder(models_root)
    ours = encoder.encode(f"a embedding:{name} red circle").embeds
    suffix = ".safetensors" if name == "tiny_embedding" else ".pt"
    pipe = reference_pipeline(components, components.text_encoders[0], components.tokenizers[0])
    pipe.load_textual_inversion(str(models_root / "embeddings" / (name + suffix)), token="<tiny>")
    theirs = reference_hidden(pipe, "a <tiny> red circle", pipe.text_encoder, pipe.tokenizer)
    difference = (ours - theirs).abs().max().item()
    print(f"embedding parity ({name}): max |difference| = {difference:.2e}")
    assert difference <= 1e-5


def test_sdxl_file_gives_each_encoder_its_own_vectors(models_root):
    c = read_checkpoint_file(models_root / "checkpoints" / "tiny_sdxl.safetensors")
    library = EmbeddingLibrary((str(models_root / "embeddings"),))
    encoder = ClipTextEncoder(SDXL, dict(zip("lg", c.text_encoders)), dict(zip("lg", c.tokenizers)), embeddings=library)
    ours = encoder.encode("a embedding:tiny_embedding_sdxl square").embeds
    from safetensors.torch import load_file

    tables = load_file(str(models_root / "embeddings" / "tiny_embedding_sdxl.safetensors"))
    parts = []
    for key, text_encoder, tokenizer in (("clip_l", c.text_encoders[0], c.tokenizers[0]),
                                         ("clip_g", c.text_encoders[1], c.tokenizers[1])):
        pipe = reference_pipeline(c, text_encoder, tokenizer)
        pipe.load_textual_inversion(tables[key], token="<t>", text_encoder=text_encoder, tokenizer=tokenizer)
        parts.append(reference_hidden(pipe, "a <t> square", text_encoder, tokenizer, layer=-2))  # SDXL: penultimate
    assert (ours - torch.cat(parts, dim=-1)).abs().max() <= 1e-5


def test_weighted_embedding_moves_its_rows_from_the_empty_prompt(models_root):
    encoder, _ = sd1_encoder(models_root)
    plain = encoder.encode("a embedding:tiny_embedding").embeds
    weighted = encoder.encode("a (embedding:tiny_embedding:1.2)").embeds
    empty = encoder.encode("").embeds
    rows = [2, 3]  # BOS, "a", then the embedding's two vectors
    expected = empty[:, rows] + (plain[:, rows] - empty[:, rows]) * 1.2
    assert torch.allclose(weighted[:, rows], expected, atol=1e-6)
    assert torch.equal(weighted[:, :2], plain[:, :2])


def test_missing_embedding_is_a_warning_naming_it_and_the_word_is_dropped(models_root, caplog):
    encoder, _ = sd1_encoder(models_root)
    with caplog.at_level(logging.WARNING):
        out = encoder.encode("a embedding:nosuch red circle").embeds
    assert "embedding:nosuch does not exist" in caplog.text
    assert torch.equal(out, encoder.encode("a red circle").embeds)
    # a trailing comma is not part of the name when the name without it exists
    assert torch.equal(encoder.encode("a embedding:tiny_embedding, red").embeds,
                       encoder.encode("a embedding:tiny_embedding , red").embeds)


def test_names_cannot_leave_the_embeddings_folder(models_root, caplog):
    encoder, _ = sd1_encoder(models_root)
    with caplog.at_level(logging.WARNING):
        out = encoder.encode("a embedding:../checkpoints/tiny_sd1 circle").embeds
    assert "does not exist" in caplog.text
    assert torch.equal(out, encoder.encode("a circle").embeds)


def test_clip_text_encode_node_uses_the_models_embeddings_folder(models_root, tmp_path):
    runner = Runner(make_folders(tmp_path, models_root))
    with_embedding = runner.run(txt2img(**{"6.text": "a embedding:tiny_embedding_a1111 red circle"}))
    plain = runner.run(txt2img())
    assert not torch.equal(with_embedding.values["6"][0].embeds, plain.values["6"][0].embeds)
    encoder, _ = sd1_encoder(models_root)
    assert torch.allclose(with_embedding.values["6"][0].embeds,
                          encoder.encode("a embedding:tiny_embedding_a1111 red circle").embeds)
    # a changed embeddings folder re-encodes the prompt that names an embedding, not the others
    extra = models_root / "embeddings" / "extra.safetensors"
    from safetensors.torch import save_file

    save_file({"emb_params": torch.zeros(1, 32)}, str(extra))
    again = runner.run(txt2img(**{"6.text": "a embedding:tiny_embedding_a1111 red circle"}))
    extra.unlink()
    assert "6" not in again.cached and "7" in again.cached
