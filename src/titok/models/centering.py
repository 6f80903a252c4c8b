"""Latent centering: subtract the mean latent token before quantization (optional, not the authors').

A fresh small TiTok trained for a short run collapses: within a few dozen steps its
l2-normalised latent tokens become the same for every image (a shared component grows until the
image-dependent part is lost in it) and the decoder learns to ignore them, the mean-image plateau
of docs/reproduce.md. Subtracting the mean over the batch, per token position and channel, removes
that shared component before the l2 normalisation, so the tokens keep their image-dependent part.
As in batch normalisation the batch mean is used in training and a running average of it at
inference.
"""

from __future__ import annotations

import torch
from torch import nn


class LatentCentering(nn.Module):
    """Latents (B, K, C) minus a mean (K, C): the batch mean in training, the running mean otherwise.

    Args:
        num_tokens: K.
        channels: C.
        momentum: weight of the current batch mean in the running mean's update.
    """

    def __init__(self, num_tokens: int, channels: int, momentum: float = 0.1) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(num_tokens, channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K, C) -> (B, K, C); in training mode also updates the running mean."""
        if not self.training:
            return z - self.running_mean.to(z.dtype)
        if z.shape[0] < 2:
            raise ValueError("latent centering needs at least 2 images per batch in training, got 1")
        mean = z.mean(dim=0)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach().float(), self.momentum)
        return z - mean
