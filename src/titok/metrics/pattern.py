"""The pattern score: how much a texture repeated in every decoder patch shows.

A ViT decoder writes every ``patch`` x ``patch`` block with the same pixel head, so it can paint
one fixed texture into each block (a lattice that does not follow the image). Losses that reward
high frequencies (a perceptual network, a discriminator) push a small decoder to do exactly that:
it is the cheapest detail it can make. The seam score (:mod:`titok.metrics.seams`) does not see
it, since a lattice has no larger steps at block borders.

The score folds every image onto the block grid: the high-pass residual ``r = x - blur3x3(x)``
of each pixel is averaged, over all images and all blocks, at its position inside the block
(and colour channel). A texture the decoder repeats in every block survives that average; image
content, whose detail falls at any position in a block, averages out. The score is the RMS of the
averaged residual over the RMS of the residual itself: 0 for no repeated texture, 1 for a texture
that is the same in every block of every image. For natural images it is a noise floor of about
``1 / sqrt(images x blocks)`` (500 Imagenette images at 64 px, 8-px blocks: 0.01).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def highpass(images: torch.Tensor) -> torch.Tensor:
    """High-pass residual ``x - blur3x3(x)`` (replicate padding): (B, C, H, W) -> same."""
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return images - blurred


def fold_blocks(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Sum over images and ``patch`` x ``patch`` blocks at each position inside the block:
    (B, C, H, W) with H, W multiples of ``patch`` -> (C, patch, patch)."""
    b, c, h, w = images.shape
    return images.reshape(b, c, h // patch, patch, w // patch, patch).sum(dim=(0, 2, 4))


class PatternScore:
    """Accumulates the block-folded high-pass residual over batches; :meth:`compute` gives the score.

    Args:
        patch: block side (the decoder's patch size).
    """

    def __init__(self, patch: int) -> None:
        if patch < 2:
            raise ValueError(f"pattern score needs blocks of at least 2 pixels, got patch {patch}")
        self.patch = patch
        self.folded_sum: torch.Tensor | None = None  # (C, patch, patch) sum of residuals
        self.square_sum = 0.0
        self.blocks = 0

    def update(self, images: torch.Tensor) -> None:
        """Add (B, C, H, W) images with H and W multiples of ``patch``."""
        if images.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {list(images.shape)}")
        b, c, h, w = images.shape
        p = self.patch
        if h % p or w % p:
            raise ValueError(f"image side {h}x{w} is not a multiple of the block side {p}")
        residual = highpass(images.detach().float())
        folded = fold_blocks(residual, p)
        self.folded_sum = folded if self.folded_sum is None else self.folded_sum + folded
        self.square_sum += float(residual.square().sum())
        self.blocks += b * (h // p) * (w // p)

    def compute(self) -> float:
        """RMS of the block-averaged residual / RMS of the residual (NaN before any update or on
        flat images)."""
        if self.folded_sum is None or self.square_sum == 0:
            return float("nan")
        mean = self.folded_sum / self.blocks
        per_position = self.square_sum / (self.blocks * mean.numel())
        return math.sqrt(float(mean.square().mean()) / per_position)


def pattern_score(images: torch.Tensor, patch: int) -> float:
    """Pattern score of one batch of (B, C, H, W) images (see the module docstring)."""
    score = PatternScore(patch)
    score.update(images)
    return score.compute()


def lag_excess(residual: torch.Tensor, lag: int) -> torch.Tensor:
    """Covariance of a high-pass residual with itself ``lag`` pixels away, beyond the mean of
    its covariances at ``lag - 1`` and ``lag + 1``; per image, x and y averaged: (B, C, H, W) -> (B,).

    At the decoder's patch side this is the periodicity of a lattice, even one whose sign or
    strength follows the image (which the block fold of :class:`PatternScore` averages away);
    natural detail, whose covariance decays smoothly with distance, gives about 0.
    """

    def cov(d: int) -> torch.Tensor:
        along_x = (residual[..., :, :-d] * residual[..., :, d:]).mean(dim=(1, 2, 3))
        along_y = (residual[..., :-d, :] * residual[..., d:, :]).mean(dim=(1, 2, 3))
        return (along_x + along_y) / 2

    return cov(lag) - (cov(lag - 1) + cov(lag + 1)) / 2


class LatticeScore:
    """Accumulates the excess covariance of the high-pass residual at the patch period over its
    variance; :meth:`compute` gives the score: about 0 for natural images, up to about 1 for a
    lattice at that period (whatever its sign or strength does across the image).

    Args:
        patch: the period looked for (the decoder's patch size), at least 2.
    """

    def __init__(self, patch: int) -> None:
        if patch < 2:
            raise ValueError(f"lattice score needs a period of at least 2 pixels, got patch {patch}")
        self.patch = patch
        self.excess_sum = 0.0
        self.energy_sum = 0.0

    def update(self, images: torch.Tensor) -> None:
        """Add (B, C, H, W) images, H and W above ``patch + 1``."""
        if images.dim() != 4:
            raise ValueError(f"expected (B, C, H, W) images, got shape {list(images.shape)}")
        if min(images.shape[-2:]) <= self.patch + 1:
            raise ValueError(f"images {list(images.shape[-2:])} are too small for period {self.patch}")
        residual = highpass(images.detach().float())
        self.excess_sum += float(lag_excess(residual, self.patch).sum())
        self.energy_sum += float(residual.square().mean(dim=(1, 2, 3)).sum())

    def compute(self) -> float:
        """Excess lag-``patch`` covariance / variance (NaN before any update or on flat images)."""
        if self.energy_sum == 0:
            return float("nan")
        return self.excess_sum / self.energy_sum


def lattice_score(images: torch.Tensor, patch: int) -> float:
    """Lattice score of one batch of (B, C, H, W) images (see :class:`LatticeScore`)."""
    score = LatticeScore(patch)
    score.update(images)
    return score.compute()
