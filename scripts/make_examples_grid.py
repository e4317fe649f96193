"""Run every example workflow (workflows/*.json) on the demo models and draw docs/examples_grid.png.

    python scripts/make_examples_grid.py [--out docs/examples_grid.png]

Each tile is the image the workflow's SaveImage node wrote, labelled with the workflow's name and its prompt.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "nodes")]

ORDER = ["txt2img", "img2img", "hires_fix", "controlnet_canny", "controlnet_mixed", "sdxl_refiner",
         "sdxl_refiner_advanced"]
TILE, LABEL_H = 160, 44


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "examples_grid.png")
    args = parser.parse_args()

    from nodegraph.paths import project_dir
    from nodegraph_demo.evaluate import WorkflowRunner, example, positive_prompt

    with tempfile.TemporaryDirectory() as work:
        runner = WorkflowRunner(project_dir("demo_models"), Path(work), {"device": "cpu"})
        runner.folders.extra_input_dirs = [project_dir("workflows") / "inputs"]

        async def run_all() -> list[tuple[str, str, Image.Image]]:
            tiles = []
            for name in ORDER:
                workflow = example(name)
                (image, *_) = await runner.images(workflow)
                tiles.append((name, positive_prompt(workflow) or "", Image.fromarray(image)))
                print(f"{name}: {tiles[-1][1]!r}")
            return tiles

        tiles = asyncio.run(run_all())

    grid = Image.new("RGB", (len(tiles) * TILE, TILE + LABEL_H), "white")
    draw = ImageDraw.Draw(grid)
    for i, (name, prompt, image) in enumerate(tiles):
        draw.text((i * TILE + 4, 4), name, fill="black")
        draw.text((i * TILE + 4, 20), prompt[:26], fill="dimgray")
        grid.paste(image.resize((TILE - 8, TILE - 8), Image.NEAREST), (i * TILE + 4, LABEL_H))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
