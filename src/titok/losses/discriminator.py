"""Patch discriminator of the stage-2 GAN loss.

A convolutional stem, ``num_stages`` stages of (3x3 conv, blur-downsample by 2, GroupNorm,
LeakyReLU 0.1), an adaptive max-pool to a fixed grid and a two-convolution head giving one
logit per grid cell. Convolutions pad "same" as TensorFlow does (extra pixel bottom/right).
Parameter names follow the TiTok training code (``block_in.*``, ``blocks.N.*``,
``to_logits.*``), so its discriminator states load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Binomial blur filters by length.
BLUR_KERNELS: dict[int, tuple[int, ...]] = {3: (1, 2, 1), 4: (1, 3, 3, 1), 5: (1, 4, 6, 4, 1)}


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding that makes a strided conv output ``ceil(size / stride)`` long."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "same" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, [left, right, top, bottom])
        return super().forward(x)


class BlurDownsample(nn.Module):
    """Depthwise binomial blur with stride 2 ("same" padding). (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, taps: Sequence[int] = (1, 3, 3, 1)) -> None:
        """
        Args:
            taps: 1-D filter; the 2-D kernel is its outer product, normalised to sum 1.
        """
        super().__init__()
        k1 = torch.tensor(taps, dtype=torch.float32)
        k2 = k1[None, :] * k1[:, None]
        self.register_buffer("kernel", (k2 / k2.sum())[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.shape[-1]
        top, bottom = same_padding(x.shape[-2], k, 2)
        left, right = same_padding(x.shape[-1], k, 2)
        x = F.pad(x, [left, right, top, bottom])
        weight = self.kernel.to(x.dtype).expand(x.shape[1], -1, -1, -1)
        return F.conv2d(x, weight, stride=2, groups=x.shape[1])


class NLayerDiscriminator(nn.Module):
    """Patch discriminator: (B, C, H, W) images in [0, 1] -> (B, 1, pool_size, pool_size) logits.

    The published recipe (all defaults) has 128 hidden channels, three stages (128, 256, 512
    channels), a 4-tap blur, GroupNorm with 32 groups and a 16x16 output grid. For 32-64 px
    images on a CPU, e.g. ``hidden_channels=32, num_stages=2, norm_groups=8, pool_size=8``.
    """

    def __init__(
        self,
        num_channels: int = 3,
        hidden_channels: int = 128,
        num_stages: int = 3,
        blur_resample: bool = True,
        blur_kernel_size: int = 4,
        norm_groups: int = 32,
        pool_size: int = 16,
    ) -> None:
        """
        Args:
            num_channels: image channels.
            hidden_channels: channels of the stem; stage ``i`` outputs ``hidden_channels * 2**i``.
            num_stages: number of downsampling stages (>= 1).
            blur_resample: downsample with a binomial blur (else 2x2 average pooling).
            blur_kernel_size: blur length, 3, 4 or 5.
            norm_groups: GroupNorm groups; must divide every stage's channels.
            pool_size: side of the output logit grid (adaptive max-pool).
        """
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {num_stages}")
        if blur_resample and blur_kernel_size not in BLUR_KERNELS:
            raise ValueError(
                f"blur_kernel_size must be one of {sorted(BLUR_KERNELS)}, got {blur_kernel_size}"
            )
        channels = [hidden_channels] + [hidden_channels * 2**i for i in range(num_stages)]
        for ch in channels[1:]:
            if ch % norm_groups:
                raise ValueError(f"norm_groups={norm_groups} does not divide stage channels {ch}")

        self.block_in = nn.Sequential(Conv2dSame(num_channels, hidden_channels, kernel_size=5), _act())
        self.blocks = nn.ModuleList(
            nn.Sequential(
                Conv2dSame(c_in, c_out, kernel_size=3),
                BlurDownsample(BLUR_KERNELS[blur_kernel_size])
                if blur_resample
                else nn.AvgPool2d(kernel_size=2, stride=2),
                nn.GroupNorm(norm_groups, c_out),
                _act(),
            )
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.pool = nn.AdaptiveMaxPool2d((pool_size, pool_size))
        out = channels[-1]
        self.to_logits = nn.Sequential(
            Conv2dSame(out, out, kernel_size=1), _act(), Conv2dSame(out, 1, kernel_size=5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block_in(x)
        for block in self.blocks:
            h = block(h)
        return self.to_logits(self.pool(h))


def _act() -> nn.Module:
    return nn.LeakyReLU(negative_slope=0.1)
