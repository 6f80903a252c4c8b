"""Quantizers that turn the encoder's continuous latent tokens into the decoder's input.

* :class:`VectorQuantizer`: nearest codebook entry, optionally under l2 normalisation of both the
  latents and the codebook (nearest by cosine), straight-through gradients, codebook and
  commitment losses. Also the MaskGIT-VQGAN's quantizer (no normalisation).
* :class:`DiagonalGaussian`: the VAE mode, a diagonal Gaussian posterior per token.

Latents are (B, N, C): N tokens of C channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    """What a quantizer returns in training.

    Attributes:
        quantized: (B, N, C) decoder input (straight-through for VQ, a sample for VAE).
        loss: scalar total regularisation loss (codebook + commitment, or KL).
        indices: (B, N) code ids (VQ) or None (VAE).
        codebook_loss: scalar ||sg(z) - q||^2 term (VQ).
        commitment_loss: scalar beta * ||z - sg(q)||^2 term (VQ).
        kl: scalar mean KL to N(0, I) per sample (VAE).
    """

    quantized: torch.Tensor
    loss: torch.Tensor
    indices: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    kl: torch.Tensor | None = None


class VectorQuantizer(nn.Module):
    """Vector quantisation against a learned codebook.

    Args:
        codebook_size: number of codes.
        code_dim: channels per code (the TiTok ``token_size``).
        commitment_cost: beta of the commitment loss.
        use_l2_norm: normalise latents and codes to unit length before matching and decoding,
            so the nearest code is the one of highest cosine similarity.
    """

    def __init__(
        self, codebook_size: int, code_dim: int, commitment_cost: float = 0.25, use_l2_norm: bool = True
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.commitment_cost = commitment_cost
        self.use_l2_norm = use_l2_norm
        self.embedding = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def codebook(self) -> torch.Tensor:
        """The codebook as used for matching: (codebook_size, C), normalised if l2 mode."""
        w = self.embedding.weight.float()
        return F.normalize(w, dim=-1) if self.use_l2_norm else w

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code ids (...,) -> code vectors (..., C), normalised in l2 mode."""
        return F.embedding(indices, self.codebook())

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (..., C) -> ids (...,) of the nearest codes (in l2 mode: largest cosine)."""
        z = z.float()
        if self.use_l2_norm:
            z = F.normalize(z, dim=-1)
        codes = self.codebook()
        flat = z.reshape(-1, z.shape[-1])
        # ||z||^2 is constant per row, so argmin ||z - e||^2 = argmin (||e||^2 - 2 z.e).
        dist = codes.pow(2).sum(1)[None, :] - 2.0 * flat @ codes.t()
        return dist.argmin(dim=1).view(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize latents (B, N, C) with a straight-through estimator."""
        z = z.float()
        indices = self.nearest(z)
        q = self.lookup(indices)
        if self.use_l2_norm:
            z = F.normalize(z, dim=-1)
        commitment = self.commitment_cost * F.mse_loss(z, q.detach())
        codebook = F.mse_loss(q, z.detach())
        quantized = z + (q - z).detach()
        return QuantizerOutput(
            quantized=quantized,
            loss=commitment + codebook,
            indices=indices,
            codebook_loss=codebook,
            commitment_loss=commitment,
        )


class DiagonalGaussian(nn.Module):
    """VAE-mode "quantizer": the encoder emits mean and log-variance per token channel.

    The input has 2C channels: the first C are the mean, the last C the log-variance
    (clamped to [-30, 20]). Training uses a reparameterised sample and a KL term to N(0, I)
    summed over tokens and channels, averaged over the batch.
    """

    def forward(self, z: torch.Tensor, sample: bool = True) -> QuantizerOutput:
        """(B, N, 2C) -> sample or mode (B, N, C) and the KL term."""
        mean, logvar = self.split(z)
        out = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)).mean()
        return QuantizerOutput(quantized=out, loss=kl, kl=kl)

    @staticmethod
    def split(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 2C) -> mean (B, N, C), clamped log-variance (B, N, C)."""
        mean, logvar = z.float().chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)
