"""ComfyUI's model-agnostic core nodes beyond the SD pack: image, output and latent utilities, and conditioning
operations. Declarations import no torch; each `execute` imports what it needs."""
from .conditioning import NODES as _CONDITIONING_NODES
from .images import NODES as _IMAGE_NODES
from .latents import NODES as _LATENT_NODES
from .outputs import NODES as _OUTPUT_NODES

NODES = [*_CONDITIONING_NODES, *_IMAGE_NODES, *_OUTPUT_NODES, *_LATENT_NODES]
