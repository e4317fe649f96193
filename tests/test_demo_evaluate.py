"""The demo evaluation command: scoring one PNG against the prompt it carries, and the table over example runs."""
import json

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodegraph.paths import project_dir
from nodegraph_demo import dataset, evaluate


def png_with_workflow(path, image, workflow):
    info = PngInfo()
    info.add_text("prompt", json.dumps(workflow))
    Image.fromarray(image).save(path, pnginfo=info)
    return path


def test_prompt_is_read_through_conditioning_nodes(tmp_path):
    workflow = evaluate.sd1_controlnet("a green square at the top", 3, "x.png")
    path = png_with_workflow(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8), workflow)
    assert evaluate.prompt_of_png(path) == "a green square at the top"
    workflow = evaluate.sdxl_refined("a blue circle", 3)
    assert evaluate.prompt_of_png(png_with_workflow(tmp_path / "b.png", np.zeros((8, 8, 3), np.uint8),
                                                    workflow)) == "a blue circle"


def test_score_command_accepts_the_right_caption_and_rejects_a_wrong_one(tmp_path, capsys):
    sample = dataset.sample(3)
    caption = sample.caption
    path = png_with_workflow(tmp_path / "s.png", sample.image, evaluate.sd1_txt2img(caption, 1))
    assert evaluate.main(["--image", str(path)]) == 0
    assert "matches its prompt" in capsys.readouterr().out
    obj = sample.objects[0]
    other = next(c for c in dataset.COLOURS if c != obj.colour)
    assert evaluate.main(["--image", str(path), "--prompt", f"a {other} {obj.shape}"]) == 1
    assert "colour WRONG" in capsys.readouterr().out


def test_score_command_explains_a_png_without_workflow(tmp_path, capsys):
    path = tmp_path / "plain.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    assert evaluate.main(["--image", str(path)]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_base_only_variant_skips_the_refiner():
    workflow = evaluate.sdxl_base_only("a red circle", 1)
    decode = next(n for n in workflow.values() if n["class_type"] == "VAEDecode")
    base = workflow[decode["inputs"]["samples"][0]]
    assert base["class_type"] == "KSamplerAdvanced"
    assert base["inputs"]["return_with_leftover_noise"] == "disable"


@pytest.mark.parametrize("n", [3])
def test_evaluation_runs_every_example_and_fills_the_table(n, tmp_path):
    results, examples = evaluate.evaluate(project_dir("demo_models"), n, tmp_path, log=lambda line: None,
                                          settings={"device": "cpu"})
    names = [r.name for r in results]
    assert names[0].startswith("ground truth") and len(names) == 7
    truth = results[0]
    assert (truth.colour, truth.shape, truth.count) == (1.0, 1.0, 1.0)  # the checker reads its own data
    for r in results:
        assert r.n == n and all(0.0 <= v <= 1.0 for v in (r.colour, r.shape, r.position, r.count))
    controlnet = next(r for r in results if "ControlNet" in r.name)
    assert controlnet.iou is not None and 0.0 <= controlnet.iou <= 1.0
    # every generated image is a distinct 64x64 picture from a real run
    sd1 = examples[names[2]]
    assert all(im.shape == (64, 64, 3) for im in sd1) and not np.array_equal(sd1[0], sd1[1])
    text = evaluate.table(results, n, examples["baseline_iou"])
    assert text.count("\n|") == len(results) + 2
    grid = tmp_path / "grid.png"
    evaluate.draw_grid(examples, grid, columns=n)
    assert Image.open(grid).size[1] == 30 + 7 * 128  # six settings and the Canny hints


def test_sd1_row_runs_the_txt2img_example_as_shipped():
    """Only the prompt and the seed differ from workflows/txt2img.json: the cfg is the example's, not a default."""
    shipped = json.loads((project_dir("workflows") / "txt2img.json").read_text(encoding="utf-8"))
    evaluated = evaluate.sd1_txt2img("a blue square", 123)
    for nid, node in shipped.items():
        for key, value in node["inputs"].items():
            if key == "seed":
                assert evaluated[nid]["inputs"][key] == 123
            elif key == "text" and value:
                assert evaluated[nid]["inputs"][key] == "a blue square"
            else:
                assert evaluated[nid]["inputs"][key] == value, (nid, key)
    cfg = next(n["inputs"]["cfg"] for n in shipped.values() if n["class_type"] == "KSampler")
    assert evaluate.example_cfg("txt2img") == cfg
