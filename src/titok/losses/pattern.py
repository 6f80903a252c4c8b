"""A penalty on the texture a ViT decoder repeats in every patch, and shifted perceptual pairs.

A ViT decoder writes every ``patch`` x ``patch`` block with one pixel head. Under a perceptual
term it learns to paint the same fine texture into every block (a lattice that does not follow
the image; :mod:`titok.metrics.pattern` measures it): detail the tokens cannot say is cheapest
made that way. Two counter-measures, each a named :class:`~titok.losses.LossConfig` option:

* :func:`pattern_penalty` (``pattern_weight``): the squared block-folded mean of the high-pass
  residual of the error ``x_rec - x``, over the batch's residual energy. Image content falls at
  any position of a block and averages out of the fold; a texture repeated in every block does
  not, so the penalty removes that texture and leaves the rest of the error to the other terms.
* :func:`shared_random_crop` (``perceptual_shift``): both images of each perceptual pair cropped
  at one random offset, so the perceptual network sees the decoder's block grid at a new phase
  against its own strides every step.
"""

from __future__ import annotations

import torch

from titok.metrics.pattern import fold_blocks, highpass


def pattern_penalty(reconstructions: torch.Tensor, inputs: torch.Tensor, patch: int) -> torch.Tensor:
    """Repeated-texture penalty of a batch, a scalar >= 0 (the square of the error's pattern score).

    Args:
        reconstructions: (B, C, H, W) decoded images (gradients flow back here).
        inputs: (B, C, H, W) the originals; H and W multiples of ``patch``.
        patch: the decoder's patch side.
    """
    if reconstructions.shape != inputs.shape:
        raise ValueError(f"shapes differ: {list(reconstructions.shape)} vs {list(inputs.shape)}")
    b, _, h, w = inputs.shape
    if h % patch or w % patch:
        raise ValueError(f"image side {h}x{w} is not a multiple of the patch side {patch}")
    residual = highpass(reconstructions - inputs)
    blocks = b * (h // patch) * (w // patch)
    mean = fold_blocks(residual, patch) / blocks  # (C, patch, patch)
    energy = highpass(inputs).square().mean().detach().clamp_min(1e-12)
    return mean.square().mean() / energy


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
