"""A small convolutional refinement after the ViT decoder's pixel head (the ``refine_channels`` option).

The "pixels" head writes each 8x8 (patch_size) block from its own patch token, so neighbouring
blocks only agree as far as the transformer made them; at small scale the borders show as a grid.
A few 3x3 convolutions see across the borders. The refiner is residual and its last convolution
starts at zero, so adding it to a trained model changes nothing until it is trained (decoder
fine-tuning, ``titok train stage2``).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvRefiner(nn.Module):
    """``x + conv(GELU(conv(GELU(conv(x)))))`` on pixels: (B, 3, H, W) -> (B, 3, H, W).

    Args:
        channels: hidden channels of the two inner 3x3 convolutions.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"refiner channels must be >= 1, got {channels}")
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.conv_mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_out = nn.Conv2d(channels, 3, 3, padding=1)
        self.act = nn.GELU()
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_out(self.act(self.conv_mid(self.act(self.conv_in(x)))))
