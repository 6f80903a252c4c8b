"""A penalty on the lattice a ViT decoder paints at its patch period, and shifted perceptual pairs.

A ViT decoder writes every ``patch`` x ``patch`` block with one pixel head. Under a perceptual
term it learns to paint the same fine texture into every block (a lattice that does not follow
the image; :mod:`titok.metrics.pattern` measures it): detail the tokens cannot say is cheapest
made that way. Two counter-measures, each a named :class:`~titok.losses.LossConfig` option:

* :func:`lattice_penalty` (``lattice_weight``): the squared excess covariance of the decoded
  image's high-pass residual at the patch period (:func:`titok.metrics.pattern.lag_excess`),
  over the original's residual energy, per image. Natural detail has none; a lattice has it
  whether it is the same in every block or its sign and strength follow the image (a penalty on
  the block-folded mean alone was measured to leave such a modulated lattice,
  docs/learning.md#decoder-fine-tuning).
* :func:`shared_random_crop` (``perceptual_shift``): both images of each perceptual pair cropped
  at one random offset, so the perceptual network sees the decoder's block grid at a new phase
  against its own strides every step.
"""

from __future__ import annotations

import torch

from titok.metrics.pattern import highpass, lag_excess


def lattice_penalty(reconstructions: torch.Tensor, inputs: torch.Tensor, patch: int) -> torch.Tensor:
    """Lattice penalty of a batch, a scalar >= 0: the mean over images of the squared excess
    lag-``patch`` covariance of the reconstruction's high-pass residual over the original's
    residual energy (normalised by the original, so added noise cannot dilute it).

    Args:
        reconstructions: (B, C, H, W) decoded images (gradients flow back here).
        inputs: (B, C, H, W) the originals.
        patch: the decoder's patch side.
    """
    if reconstructions.shape != inputs.shape:
        raise ValueError(f"shapes differ: {list(reconstructions.shape)} vs {list(inputs.shape)}")
    if min(inputs.shape[-2:]) <= patch + 1:
        raise ValueError(f"images {list(inputs.shape[-2:])} are too small for patch {patch}")
    excess = lag_excess(highpass(reconstructions), patch)  # (B,)
    energy = highpass(inputs).square().mean(dim=(1, 2, 3)).detach().clamp_min(1e-12)
    return (excess / energy).square().mean()


def shared_random_crop(
    x: torch.Tensor, y: torch.Tensor, shift: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop (B, C, H, W) ``x`` and ``y`` to (H - shift, W - shift) at one random offset in
    [0, shift] per axis (the same for both and for the whole batch); ``shift`` 0 returns them."""
    if shift <= 0:
        return x, y
    h, w = x.shape[-2:]
    if shift >= min(h, w):
        raise ValueError(f"shift {shift} leaves nothing of {h}x{w} images")
    dy, dx = (int(v) for v in torch.randint(0, shift + 1, (2,), generator=generator))
    return (
        x[..., dy : dy + h - shift, dx : dx + w - shift],
        y[..., dy : dy + h - shift, dx : dx + w - shift],
    )
