"""What each token position carries: reconstruction quality against the number of tokens.

For a tokenizer trained on token prefixes (``config.variable_length``), the first k tokens
decode to an image on their own; :func:`prefix_curve` measures PSNR and SSIM of those
reconstructions for each k, and :func:`position_sensitivity` how much the output changes when
one position's code is replaced by another image's code at that position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from titok.metrics.image_quality import psnr, ssim
from titok.models.prefixes import powers_of_two
from titok.models.titok import TiTok


def default_lengths(model: TiTok) -> list[int]:
    """1, 2, 4, ..., K for a variable-length model; only K for a fixed-length one."""
    k = model.config.num_latent_tokens
    return powers_of_two(k) if model.config.variable_length else [k]


@torch.inference_mode()
def prefix_curve(
    model: TiTok,
    images: torch.Tensor,
    lengths: Sequence[int] | None = None,
    batch_size: int = 100,
    force_prefix: bool = False,
) -> list[dict[str, float]]:
    """PSNR and SSIM (means over ``images`` (N, 3, S, S) in [0, 1]) of the reconstructions from
    the first k tokens, for each k of ``lengths`` (default :func:`default_lengths`).

    Returns one row per k: ``{"num_tokens", "psnr", "ssim", "psnr_gain"}``, ``psnr_gain`` being
    the gain over the previous row (0 for the first).
    """
    model = model.eval()
    tokens = model.encode(images, batch_size=batch_size)
    images = images.to(model.device, torch.float32)
    rows: list[dict[str, float]] = []
    for k in lengths or default_lengths(model):
        model.check_prefix(k, force_prefix)
        recon = model.decode(tokens[:, :k], batch_size=batch_size, force_prefix=force_prefix)
        value = float(psnr(recon, images).mean())
        rows.append(
            {
                "num_tokens": k,
                "psnr": value,
                "ssim": float(ssim(recon, images).mean()),
                "psnr_gain": value - rows[-1]["psnr"] if rows else 0.0,
            }
        )
    return rows


@torch.inference_mode()
def position_sensitivity(model: TiTok, images: torch.Tensor, batch_size: int = 100) -> list[float]:
    """For each token position j of K: the mean squared change of the full-length reconstruction
    when image i's token j is replaced by image i-1's, over the mean squared difference of the
    two images (0: position j is ignored; the positions of an ordered model fall with j)."""
    model = model.eval()
    tokens = model.encode(images, batch_size=batch_size)
    base = model.decode(tokens, batch_size=batch_size)
    shift = torch.roll(torch.arange(len(images)), 1)
    images = images.to(base.device, base.dtype)
    scale = max((images - images[shift]).pow(2).mean().item(), 1e-12)
    out = []
    for j in range(tokens.shape[1]):
        swapped = tokens.clone()
        swapped[:, j] = tokens[shift, j]
        out.append((model.decode(swapped, batch_size=batch_size) - base).pow(2).mean().item() / scale)
    return out
