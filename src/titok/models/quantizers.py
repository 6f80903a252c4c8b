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
        dead_code_threshold: 0 (the authors' quantizer) or the usage below which a code is
            "dead" and restarted, in training, on a latent drawn from the current batch. Usage is
            a running average (``usage_decay``) of each code's share of the batch's tokens times
            ``codebook_size`` (1.0: used as often as under uniform use). All codes start dead, so
            the first training step also initialises the codebook from the encoder's outputs; a
            restarted code gets usage 1.0, so it has ``log(1 / threshold) / (1 - decay)`` steps
            to be chosen before it is restarted again. See :class:`DeadCodeRestart`.
        usage_decay: decay of that running average.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        commitment_cost: float = 0.25,
        use_l2_norm: bool = True,
        dead_code_threshold: float = 0.0,
        usage_decay: float = 0.99,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.commitment_cost = commitment_cost
        self.use_l2_norm = use_l2_norm
        self.embedding = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        self.restart = (
            DeadCodeRestart(codebook_size, dead_code_threshold, usage_decay)
            if dead_code_threshold > 0
            else None
        )

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
        if self.restart is not None and self.training:
            matched = F.normalize(z, dim=-1) if self.use_l2_norm else z
            if self.restart(self.embedding.weight, indices, matched.detach()):
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


class DeadCodeRestart(nn.Module):
    """Restart codes that the encoder no longer chooses on latents of the current batch.

    Keeps ``usage`` (codebook_size,), a running average of each code's share of the tokens
    (times codebook_size). After each training batch the codes whose usage is below
    ``threshold`` are overwritten with latents drawn at random from the batch and their usage is
    reset to 1. With several processes the counts are summed over processes and the new codes
    come from process 0, so every replica keeps the same codebook.

    Args:
        codebook_size: number of codes.
        threshold: usage below which a code is restarted (> 0).
        decay: decay of the running average, in (0, 1).
    """

    def __init__(self, codebook_size: int, threshold: float, decay: float = 0.99) -> None:
        super().__init__()
        if not threshold > 0:
            raise ValueError(f"dead-code threshold must be > 0, got {threshold}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"usage decay must be in (0, 1), got {decay}")
        self.threshold = threshold
        self.decay = decay
        self.register_buffer("usage", torch.zeros(codebook_size))

    @torch.no_grad()
    def forward(self, codebook: torch.Tensor, indices: torch.Tensor, latents: torch.Tensor) -> int:
        """Update usage with ``indices`` (B, N); restart dead rows of ``codebook`` in place.

        ``latents`` (B, N, C) are the batch's latents as matched (normalised in l2 mode).
        Returns the number of codes restarted.
        """
        n = self.usage.numel()
        counts = torch.bincount(indices.flatten(), minlength=n).float()
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            torch.distributed.all_reduce(counts)
        self.usage.mul_(self.decay).add_(counts * (n / counts.sum().clamp(min=1.0)), alpha=1 - self.decay)
        dead = (self.usage < self.threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        flat = latents.reshape(-1, latents.shape[-1])
        new = flat[torch.randint(len(flat), (dead.numel(),), device=flat.device)].to(codebook.dtype)
        if distributed:
            torch.distributed.broadcast(new, src=0)
        codebook[dead] = new
        self.usage[dead] = 1.0
        return int(dead.numel())


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
