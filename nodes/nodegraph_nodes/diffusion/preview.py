"""Cheap live previews: latent -> RGB by a linear map, no VAE decode.

A VAE's latent space is close enough to linear in colour that rgb = latent . factors + bias gives a recognisable
(blurry, latent-resolution) picture. The per-family factors are the published least-squares fits for Stability's
VAEs, the values ComfyUI uses for SD1.x / SD2.x and SDXL latents (its `latent2rgb` / `auto` previews); a checkpoint whose VAE is its own (the demo models) carries its own fit
(`fit_latent_rgb`) in its header, which the model handle passes on. Factors apply to latents in the UNet's space
(scaled by the VAE factor), which is what the sampler callback hands out.
"""
from __future__ import annotations

import torch
from PIL import Image

# family -> (4x3 factors: latent channel -> R, G, B contribution; RGB bias). Output is in [-1, 1].
LATENT_RGB: dict[str, tuple[list[list[float]], list[float]]] = {
    "sd1": (
        [
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ],
        [0.0, 0.0, 0.0],
    ),
    "sdxl": (
        [
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        [0.1084, -0.0175, -0.0011],
    ),
}


LatentRgb = tuple[list[list[float]], list[float]]


def latent_to_rgb(latent: torch.Tensor, family: str = "sd1", fitted: LatentRgb | None = None) -> Image.Image:
    """A PIL RGB image (latent resolution) of the first sample of `latent` ([B, 4, h, w] or [4, h, w]).

    `fitted`: the model's own (factors, bias), used instead of the family's.
    """
    if fitted is not None:
        factors, bias = fitted
    else:
        try:
            factors, bias = LATENT_RGB[family]
        except KeyError:
            raise ValueError(
                f"no preview factors for latent family {family!r}; known: {sorted(LATENT_RGB)}"
            ) from None
    sample = latent[0] if latent.ndim == 4 else latent
    sample = sample.detach().float().cpu()
    rgb = torch.einsum("chw,cr->hwr", sample, torch.tensor(factors)) + torch.tensor(bias)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return Image.fromarray(pixels.numpy())


def fit_latent_rgb(latents: torch.Tensor, images: torch.Tensor) -> LatentRgb:
    """Least-squares (factors, bias) from UNet-space `latents` [N, C, h, w] to `images` [N, 3, H, W] in [-1, 1].

    The images are area-averaged to the latent grid, so each latent pixel is matched with the colour it stands for.
    """
    target = torch.nn.functional.adaptive_avg_pool2d(images.double(), latents.shape[-2:])
    x = latents.double().movedim(1, -1).reshape(-1, latents.shape[1])
    y = target.movedim(1, -1).reshape(-1, 3)
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution  # [C + 1, 3]
    factors = [[round(float(v), 5) for v in row] for row in solution[:-1]]
    return factors, [round(float(v), 5) for v in solution[-1]]


@torch.no_grad()
def fit_vae_latent_rgb(vae: torch.nn.Module, samples: int = 16, size: int = 8, seed: int = 0) -> LatentRgb:
    """(factors, bias) for a VAE that comes without them: fitted on unit-variance UNet-space latents (the range a
    sampler's denoised latents live in) and the VAE's own decode of them. Deterministic for a given VAE."""
    param = next(vae.parameters())
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(samples, vae.config.latent_channels, size, size, generator=generator)
    scale = vae.config.scaling_factor
    images = vae.decode((latents / scale).to(param.device, param.dtype)).sample.float().clamp(-1, 1).cpu()
    return fit_latent_rgb(latents, images)
