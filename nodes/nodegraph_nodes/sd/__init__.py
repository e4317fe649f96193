"""The Stable Diffusion node pack: ComfyUI's core nodes (and their names), on diffusers and transformers.

The node declarations import no torch; each `execute` imports the diffusion library it needs, so listing nodes,
validating workflows and starting the server stay fast.
"""
from .clip_vision import NODES as _CLIP_VISION_NODES
from .controlnet import NODES as _CONTROLNET_NODES
from .custom_sampling import NODES as _CUSTOM_SAMPLING_NODES
from .gligen import NODES as _GLIGEN_NODES
from .images import NODES as _IMAGE_NODES
from .inpaint import NODES as _INPAINT_NODES
from .latent import NODES as _LATENT_NODES
from .loader_nodes import NODES as _LOADING_NODES
from .masks import NODES as _MASK_NODES
from .model_files import NODES as _MODEL_FILE_NODES
from .sampler_nodes import NODES as _SAMPLING_NODES
from .sdxl import NODES as _SDXL_NODES
from .style_model import NODES as _STYLE_MODEL_NODES
from .table_schedulers import NODES as _TABLE_SCHEDULER_NODES
from .unclip import NODES as _UNCLIP_NODES
from .upscale import NODES as _UPSCALE_NODES

# What the nodes import on first use (torch, diffusers, transformers behind them): `nodegraph serve` imports these
# in the background as soon as it listens, `nodegraph run` before the first node (see nodegraph/warmup.py).
WARM_IMPORTS = (
    "nodegraph_nodes.diffusion.ops",
    "nodegraph_nodes.diffusion.checkpoint_files",
    "nodegraph_nodes.diffusion.sampling_run",
    "nodegraph_nodes.diffusion.text_encoding",
    "nodegraph_nodes.diffusion.preview",
)

NODES = [
    *_LOADING_NODES, *_MODEL_FILE_NODES, *_LATENT_NODES, *_SAMPLING_NODES, *_CUSTOM_SAMPLING_NODES,
    *_TABLE_SCHEDULER_NODES, *_SDXL_NODES, *_CONTROLNET_NODES, *_IMAGE_NODES, *_INPAINT_NODES, *_MASK_NODES,
    *_UPSCALE_NODES, *_CLIP_VISION_NODES, *_UNCLIP_NODES, *_STYLE_MODEL_NODES, *_GLIGEN_NODES,
]
