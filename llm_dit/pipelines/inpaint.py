"""Inpainting's two guarantees on top of diffusers' `ZImageInpaintPipeline`: a white mask is the run
without a mask, a black mask is the init image.

Left to itself the pipeline spends the seed's generator on sampling the VAE's latent distribution
before it draws the noise, so even a white mask at strength 1 would start from other noise than
txt2img. Here the run starts from the latents img2img would start from (the init image's latents,
`latent_dist.mode()`, noised to the first sigma with the seed's first draw, float32 like txt2img's),
handed to the pipeline as `latents`. The pipeline then draws its blending noise first from the
same seed: the same noise keeps the kept region consistent with the start. The DiT and the VAE
decoder mix the whole image, so the result's kept pixels are the init image's own, composited
through the mask (also after ControlNet inpainting; PIL's `Image.composite`: grey mask values blend; diffusers' `apply_overlay` goes
through premultiplied alpha and moves white-masked pixels by up to 1 level).
"""

from __future__ import annotations

import torch
from PIL import Image


def start_latents(scheduler, init_latents: torch.Tensor, sigmas: list[float], seeds: list[int]) -> torch.Tensor:
    """The img2img start for each init image (`init_latents`, one per seed): noised to the first of
    `sigmas` (shifted by `scheduler`); at sigma 1 exactly the noise txt2img starts from. The
    generators are fresh ones, so the caller's stay unspent for the pipeline's own draw."""
    from diffusers.utils.torch_utils import randn_tensor

    scheduler.set_timesteps(sigmas=sigmas)
    noise = torch.cat([randn_tensor((1, *x.shape[1:]), generator=torch.Generator("cpu").manual_seed(seed),
                                    dtype=torch.float32) for x, seed in zip(init_latents.split(1), seeds)])
    return scheduler.scale_noise(init_latents.float().cpu(), scheduler.timesteps[:1], noise)


def keep_unmasked(mask: Image.Image, init: Image.Image, picture: Image.Image) -> Image.Image:
    """`picture` where the mask is white, the init image's pixels where it is black."""
    return Image.composite(picture, init.convert("RGB"), mask)
