"""Hinge GAN losses and the LeCam regulariser.

LeCam (Tseng et al., 2021) keeps the discriminator's logits on real images close to the
running mean of its logits on fakes and vice versa:
``relu(mean(D(real)) - ema_fake)^2 + relu(ema_real - mean(D(fake)))^2``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``(mean(relu(1 - real)) + mean(relu(1 + fake))) / 2`` (scalar)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``-mean(D(fake))`` (scalar)."""
    return -logits_fake.mean()


def lecam_loss(
    logits_real_mean: torch.Tensor,
    logits_fake_mean: torch.Tensor,
    ema_logits_real_mean: torch.Tensor,
    ema_logits_fake_mean: torch.Tensor,
) -> torch.Tensor:
    """LeCam penalty from the batch means of the logits and their running means (scalar)."""
    return (
        F.relu(logits_real_mean - ema_logits_fake_mean).pow(2).mean()
        + F.relu(ema_logits_real_mean - logits_fake_mean).pow(2).mean()
    )


class LeCamEMA(nn.Module):
    """Running means of the discriminator's mean logits on real and fake images.

    Buffers ``ema_real_logits_mean`` / ``ema_fake_logits_mean`` (shape (1,), start at 0) are
    saved with the module so a resumed run continues the same averages.
    """

    ema_real_logits_mean: torch.Tensor
    ema_fake_logits_mean: torch.Tensor

    def __init__(self, decay: float = 0.999) -> None:
        """
        Args:
            decay: EMA decay per discriminator step.
        """
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("ema_real_logits_mean", torch.zeros(1))
        self.register_buffer("ema_fake_logits_mean", torch.zeros(1))

    def forward(
        self, logits_real: torch.Tensor, logits_fake: torch.Tensor, update: bool = True
    ) -> torch.Tensor:
        """LeCam penalty of this batch against the running means; then update them.

        Args:
            logits_real: discriminator logits on real images, any shape.
            logits_fake: discriminator logits on reconstructions, any shape.
            update: advance the running means with this batch (after computing the penalty).
        """
        real_mean, fake_mean = logits_real.float().mean(), logits_fake.float().mean()
        penalty = lecam_loss(
            real_mean, fake_mean, self.ema_real_logits_mean.clone(), self.ema_fake_logits_mean.clone()
        )
        if update:
            with torch.no_grad():
                self.ema_real_logits_mean.mul_(self.decay).add_((1.0 - self.decay) * real_mean.detach())
                self.ema_fake_logits_mean.mul_(self.decay).add_((1.0 - self.decay) * fake_mean.detach())
        return penalty


@contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` without recording gradients for its parameters (inputs still get them).

    Autograd decides at each operation whether a parameter needs a gradient, so the flags
    are restored on exit while the recorded graph keeps the parameters out of backward.
    """
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
