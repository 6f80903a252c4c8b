"""Views of a perceptual pair: the same random transform applied to both images before the
perceptual network reads them.

A decoder trained against one fixed network learns whatever that network over-rewards: a small
classifier with a strided stem, read at 64 px, was measured to make the decoder paint textures
that exist for the network only (a cross-hatch per patch, then vertical colour streaks,
docs/learning.md#decoder-fine-tuning). Showing the network the pair under a transform drawn anew
each step means an artefact must pass under every view to pay, which natural detail does and a
network-specific pattern does not (the idea of E-LPIPS, Kettunen et al. 2019: a random ensemble
of transforms makes a perceptual distance robust to what optimising against it produces).
Each is a named :class:`~titok.losses.LossConfig` option, off by default:

* :func:`shared_random_crop` (``perceptual_shift``): one random crop offset for the pair, so
  the network's strides meet the decoder's block grid at a new phase every step;
* :func:`shared_dihedral` (``perceptual_dihedral``): one of the 8 flips and quarter turns of the
  square per image pair, so a pattern with an orientation is read in every orientation;
* :func:`binomial_blur` (``perceptual_blur``): both images low-passed by a binomial kernel, so
  the network's stride-2 stem cannot alias pixel-scale patterns into features (the L2 term
  alone then speaks for the finest scale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def dihedral(images: torch.Tensor, element: int) -> torch.Tensor:
    """One of the 8 symmetries of the square applied to (..., H, W) ``images``: ``element`` in
    [0, 8), bit 2 a transpose (H and W swapped), then bit 1 a vertical and bit 0 a horizontal
    flip; 0 is the identity."""
    if not 0 <= element < 8:
        raise ValueError(f"dihedral element must be in [0, 8), got {element}")
    if element & 4:
        images = images.transpose(-1, -2)
    dims = [d for bit, d in ((2, -2), (1, -1)) if element & bit]
    return images.flip(dims) if dims else images


def shared_dihedral(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Square (B, C, S, S) ``x`` and ``y``, each pair ``(x[i], y[i])`` under one random element of
    the dihedral group (drawn per pair, uniform over the 8): two tensors of the same shape."""
    if x.shape != y.shape or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"need two square batches of one shape, got {list(x.shape)} and {list(y.shape)}")
    elements = torch.randint(0, 8, (x.shape[0],), generator=generator)
    out_x, out_y = torch.empty_like(x), torch.empty_like(y)
    for element in elements.unique().tolist():
        index = (elements == element).nonzero().squeeze(1).to(x.device)
        out_x = out_x.index_copy(0, index, dihedral(x.index_select(0, index), element))
        out_y = out_y.index_copy(0, index, dihedral(y.index_select(0, index), element))
    return out_x, out_y


def binomial_blur(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) ``images`` low-passed by the separable binomial kernel of ``size`` taps
    (3: [1, 2, 1] / 4, 5: [1, 4, 6, 4, 1] / 16), edges replicated; ``size`` 0 or 1 returns them."""
    if size <= 1:
        return images
    if size % 2 == 0:
        raise ValueError(f"the blur kernel needs an odd number of taps, got {size}")
    row = torch.ones(1, dtype=torch.float64)
    for _ in range(size - 1):  # Pascal's triangle: the binomial coefficients of size - 1
        row = F.pad(row, (0, 1)) + F.pad(row, (1, 0))
    row = (row / row.sum()).to(images)
    channels = images.shape[1]
    half = size // 2
    padded = F.pad(images, (half, half, half, half), mode="replicate")
    kernel_x = row.view(1, 1, 1, size).expand(channels, 1, 1, size)
    kernel_y = row.view(1, 1, size, 1).expand(channels, 1, size, 1)
    blurred = F.conv2d(padded, kernel_x, groups=channels)
    return F.conv2d(blurred, kernel_y, groups=channels)
