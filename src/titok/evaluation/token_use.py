"""Does a tokenizer use its tokens? The figures that tell a learning TiTok from the mean-image plateau.

A TiTok that has not learned yet outputs (about) the mean training image whatever its tokens are,
and often gives every image the same code at each token position. :func:`token_use` measures,
on a batch of images:

* ``psnr`` of the reconstructions (mean over images), and ``mean_image_psnr``: the same for the
  batch's own mean image as output (about what a model on the plateau reaches);
* ``token_sensitivity``: the mean squared change of the output when each image's tokens are
  replaced by another image's, over the mean squared difference of the two images (0: the output
  ignores the tokens; about 1: swapping tokens swaps images);
* ``codes_used`` and ``perplexity`` of the codes (VQ models; None for VAE models).
"""

from __future__ import annotations

import torch

from titok.metrics.codebook import codebook_usage
from titok.metrics.image_quality import psnr
from titok.models.titok import TiTok


@torch.inference_mode()
def token_use(model: TiTok, images: torch.Tensor, batch_size: int = 64) -> dict[str, float | None]:
    """The figures of the module docstring for ``images`` (N, 3, S, S) in [0, 1], N >= 2."""
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"expected at least 2 images (N, 3, S, S), got shape {tuple(images.shape)}")
    model = model.eval()
    tokens = model.encode(images, batch_size=batch_size)
    recon = model.decode(tokens, batch_size=batch_size)
    shift = torch.roll(torch.arange(len(images)), 1)
    swapped = model.decode(tokens[shift], batch_size=batch_size)
    images = images.to(recon.device, recon.dtype)
    mean_image = images.mean(0, keepdim=True).expand_as(images)
    image_change = (images - images[shift]).pow(2).mean().item()
    usage = None if model.is_vae else codebook_usage(tokens, model.codebook_size)
    return {
        "psnr": float(psnr(recon, images).mean()),
        "mean_image_psnr": float(psnr(mean_image, images).mean()),
        "token_sensitivity": (swapped - recon).pow(2).mean().item() / max(image_change, 1e-12),
        "codes_used": None if usage is None else float(round(usage["used_fraction"] * model.codebook_size)),
        "perplexity": None if usage is None else usage["perplexity"],
    }
