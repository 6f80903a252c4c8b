"""The "conv" decoder head's pixel decoder: patch features upsampled to pixels by convolutions.

The "pixels" head writes each patch from its own token with one linear map, so any texture it
learns is one of a fixed set of p x p patterns, and decoder fine-tuning with perceptual and GAN
terms makes it paint the same one into every patch. Convolutions after nearest upsampling are
translation-equivariant: features that are equal over a region give a flat output there, so
there is no patch period to paint.

There is no normalisation layer: with few channels a GroupNorm normalises each channel over the
image, and the GAN term then teaches the decoder a bright blob at a fixed place that sets those
statistics (the "droplet" of normalised generators), measured with the VQGAN decoder as the head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class UpBlock(nn.Module):
    """2x upsampling (``mode``: "nearest" or "bilinear"), a 3x3 convolution to ``cout``, then a
    residual pair of 3x3 convolutions: (B, cin, h, w) -> (B, cout, 2h, 2w)."""

    def __init__(self, cin: int, cout: int, mode: str = "nearest") -> None:
        super().__init__()
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"mode: expected 'nearest' or 'bilinear', got {mode!r}")
        self.mode = mode
        self.conv_up = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv_up(self._upsample(x)))
        return x + self.conv2(F.gelu(self.conv1(x)))

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ConvUpsampler(nn.Module):
    """Features (B, channels[0], g, g) -> pixels (B, 3, g * 2**L, g * 2**L), L = len(channels).

    Args:
        channels: the width after each of the L upsampling steps (the input has ``channels[0]``).
        mode: "nearest" or "bilinear" 2x upsampling in every step.
    """

    def __init__(self, channels: Sequence[int], mode: str = "nearest") -> None:
        super().__init__()
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive widths, got {list(channels)}")
        widths = [channels[0], *channels]
        self.up = nn.ModuleList(UpBlock(widths[i], widths[i + 1], mode) for i in range(len(channels)))
        self.conv_out = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.up:
            x = block(x)
        return self.conv_out(x)
