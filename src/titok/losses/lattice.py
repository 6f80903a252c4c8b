"""Penalties on the lattice and the seams a ViT decoder paints at its patch period.

A ViT decoder writes every ``patch`` x ``patch`` block with one pixel head. Under a perceptual
term it learns to paint the same fine texture into every block (a lattice that does not follow
the image; :mod:`titok.metrics.pattern` measures it): detail the tokens cannot say is cheapest
made that way. Counter-measures, each a named :class:`~titok.losses.LossConfig` option:

* :func:`lattice_penalty` (``lattice_weight``): the squared excess covariance of the decoded
  image's high-pass residual at the patch period (:func:`titok.metrics.pattern.lag_excess`),
  over the original's residual energy, per image. Natural detail has none; a lattice has it
  whether it is the same in every block or its sign and strength follow the image (a penalty on
  the block-folded mean alone was measured to leave such a modulated lattice,
  docs/learning.md#decoder-fine-tuning).
* :func:`seam_penalty` (``seam_weight``): how far the decoded image's pixel steps across block
  borders exceed those inside blocks, beyond the original's own ratio (the seam score of
  :mod:`titok.metrics.seams`, per image). With the lattice penalty alone, stage 2 was measured
  to trade the lattice for visible block seams (docs/learning.md#decoder-fine-tuning).

Transforms of the perceptual pair, the other kind of counter-measure, are in
:mod:`titok.losses.perceptual_views`.
"""

from __future__ import annotations

import torch

from titok.metrics.pattern import highpass, lag_excess


def _check_pair(reconstructions: torch.Tensor, inputs: torch.Tensor, min_side: int) -> None:
    """Both (B, C, H, W) of one shape, with sides of at least ``min_side`` pixels."""
    if reconstructions.shape != inputs.shape:
        raise ValueError(f"shapes differ: {list(reconstructions.shape)} vs {list(inputs.shape)}")
    if min(inputs.shape[-2:]) < min_side:
        raise ValueError(f"images {list(inputs.shape[-2:])} are too small: sides of {min_side} needed")


def lattice_penalty(reconstructions: torch.Tensor, inputs: torch.Tensor, patch: int) -> torch.Tensor:
    """Lattice penalty of a batch, a scalar >= 0: the mean over images of the squared excess
    lag-``patch`` covariance of the reconstruction's high-pass residual over the original's
    residual energy (normalised by the original, so added noise cannot dilute it).

    Args:
        reconstructions: (B, C, H, W) decoded images (gradients flow back here).
        inputs: (B, C, H, W) the originals.
        patch: the decoder's patch side.
    """
    _check_pair(reconstructions, inputs, patch + 2)
    excess = lag_excess(highpass(reconstructions), patch)  # (B,)
    energy = highpass(inputs).square().mean(dim=(1, 2, 3)).detach().clamp_min(1e-12)
    return (excess / energy).square().mean()


def _seam_ratio(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B,) mean absolute step across ``patch`` block borders over the mean step inside blocks."""
    border_sum = images.new_zeros(images.shape[0])
    inside_sum = images.new_zeros(images.shape[0])
    border_count = inside_count = 0
    for dim in (-1, -2):
        steps = images.diff(dim=dim).abs()
        n = steps.shape[dim]
        border = (torch.arange(n, device=images.device) + 1) % patch == 0
        mask = (border if dim == -1 else border[:, None]).expand(steps.shape[-2:]).to(steps.dtype)
        border_sum = border_sum + (steps * mask).sum(dim=(1, 2, 3))
        inside_sum = inside_sum + (steps * (1 - mask)).sum(dim=(1, 2, 3))
        border_count += int(mask.sum()) * steps.shape[1]
        inside_count += int((1 - mask).sum()) * steps.shape[1]
    return (border_sum / border_count) / (inside_sum / inside_count).clamp_min(1e-6)


def seam_penalty(reconstructions: torch.Tensor, inputs: torch.Tensor, patch: int) -> torch.Tensor:
    """Seam penalty of a batch, a scalar >= 0: the mean over images of the squared amount by which
    the reconstruction's seam ratio (border step over interior step) exceeds the original's.

    Args:
        reconstructions: (B, C, H, W) decoded images (gradients flow back here).
        inputs: (B, C, H, W) the originals.
        patch: the decoder's patch side.
    """
    _check_pair(reconstructions, inputs, patch + 1)
    target = _seam_ratio(inputs.detach(), patch)
    return torch.relu(_seam_ratio(reconstructions, patch) - target).square().mean()
