"""The stage-2 (pixel-space) tokenizer loss: reconstruction, perceptual, quantizer and GAN terms.

Generator step::

    total = reconstruction_weight * l2(x, x_rec)
          + perceptual_weight * perceptual(view(x), view(x_rec))
          + lattice_weight * lattice_penalty(x_rec, x)
          + seam_weight * seam_penalty(x_rec, x)
          + quantizer_weight * quantizer_loss
          + discriminator_weight * factor * (-mean(D(x_rec)))

with ``factor = discriminator_factor`` from ``discriminator_start`` on and 0 before (the
discriminator is not even run then; ``view`` is the same random crop, flip or turn and blur
for both images, the identity unless ``perceptual_shift``, ``perceptual_dihedral`` or
``perceptual_blur`` is set; :mod:`titok.losses.perceptual_views`). Discriminator step::

    factor * hinge(D(x), D(x_rec)) + lecam_regularization_weight * LeCam

Both steps compute in float32 with autocast turned off, whatever the caller's precision.
The defaults of :class:`LossConfig` are those of the TiTok stage-2 training configs
(TiTok-L-32 / B-64 / S-128).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import ConfigError
from titok.losses.adversarial import LeCamEMA, frozen_parameters, hinge_d_loss, hinge_g_loss
from titok.losses.classifier_distance import NEEDS_NETWORK
from titok.losses.discriminator import BLUR_KERNELS, NLayerDiscriminator
from titok.losses.lattice import lattice_penalty, seam_penalty
from titok.losses.perceptual import (
    PerceptualLoss,
    is_classifier_spec,
    parse_perceptual_spec,
    uses_perceptual,
)
from titok.losses.perceptual_views import binomial_blur, shared_dihedral, shared_random_crop


@dataclass
class LossConfig:
    """Weights and schedule of the stage-2 loss (field names as in the TiTok ``losses`` configs).

    Attributes:
        reconstruction_loss: "l2" (mean squared error) or "l1".
        reconstruction_weight: weight of the pixel reconstruction term.
        perceptual_loss: "convnext_s", "lpips", "lpips-convnext_s-A-B", "classifier" (offline:
            the feature maps of ``perceptual_network``) or "none".
        perceptual_network: folder of the classifier that the "classifier" distance reads.
        perceptual_taps: which of that classifier's feature maps the distance compares (0: the
            stem, then one per stage, fine to coarse; None: all). The fine maps drive a small
            decoder to paint one texture into every patch (docs/learning.md#decoder-fine-tuning).
        perceptual_weight: weight of the perceptual term.
        perceptual_shift: crop both images of each perceptual pair at one random offset in
            [0, shift] pixels per axis (0: off), so the perceptual network meets the decoder's
            block grid at a new phase every step.
        perceptual_dihedral: show each perceptual pair under one random flip or quarter turn
            of the square (drawn per pair), so a pattern that exists for the network in one
            orientation only does not pay.
        perceptual_blur: low-pass both images of each perceptual pair with a binomial kernel of
            this many taps (0: off; 3 or 5), so the network's strided stem cannot alias
            pixel-scale patterns into its features.
        lattice_weight: weight of the lattice penalty (0: off), needs the decoder's patch
            side (``Stage2Loss(patch_size=...)``; :func:`titok.losses.lattice.lattice_penalty`).
        seam_weight: weight of the seam penalty (0: off; needs the patch side too;
            :func:`titok.losses.lattice.seam_penalty`).
        quantizer_weight: weight of the quantizer (codebook + commitment) loss.
        discriminator_start: first global step with a GAN term and discriminator training.
        discriminator_factor: GAN factor once the discriminator is on.
        discriminator_weight: weight of the generator's GAN term.
        lecam_regularization_weight: weight of the LeCam term of the discriminator step (0: off).
        lecam_ema_decay: EMA decay of LeCam's running logit means.
        discriminator_hidden_channels, discriminator_num_stages, discriminator_blur_resample,
        discriminator_blur_kernel_size, discriminator_norm_groups, discriminator_pool_size:
            architecture of :class:`NLayerDiscriminator` (see :meth:`small`).
        lpips_vgg_weights, lpips_linear_weights, convnext_weights: local weight files of the
            perceptual backbones (None: torch hub cache, else download).
        allow_missing: without perceptual weights, warn and drop that term instead of failing.
        download_weights: try to download perceptual weights not found locally.
    """

    reconstruction_loss: str = "l2"
    reconstruction_weight: float = 1.0
    perceptual_loss: str = "convnext_s"
    perceptual_weight: float = 0.1
    perceptual_network: str | None = None
    perceptual_taps: list[int] | None = None
    perceptual_shift: int = 0
    perceptual_dihedral: bool = False
    perceptual_blur: int = 0
    lattice_weight: float = 0.0
    seam_weight: float = 0.0
    quantizer_weight: float = 0.0
    discriminator_start: int = 20_000
    discriminator_factor: float = 1.0
    discriminator_weight: float = 0.01
    lecam_regularization_weight: float = 0.001
    lecam_ema_decay: float = 0.999
    discriminator_hidden_channels: int = 128
    discriminator_num_stages: int = 3
    discriminator_blur_resample: bool = True
    discriminator_blur_kernel_size: int = 4
    discriminator_norm_groups: int = 32
    discriminator_pool_size: int = 16
    lpips_vgg_weights: str | None = None
    lpips_linear_weights: str | None = None
    convnext_weights: str | None = None
    allow_missing: bool = False
    download_weights: bool = True

    def __post_init__(self) -> None:
        if self.reconstruction_loss not in ("l1", "l2"):
            raise ConfigError(
                f"losses.reconstruction_loss: expected 'l1' or 'l2', got {self.reconstruction_loss!r}"
            )
        parse_perceptual_spec(self.perceptual_loss)
        if is_classifier_spec(self.perceptual_loss) and not self.perceptual_network:
            raise ConfigError(f"losses.{NEEDS_NETWORK}")
        for name in (
            "reconstruction_weight",
            "perceptual_weight",
            "perceptual_shift",
            "perceptual_blur",
            "lattice_weight",
            "seam_weight",
            "quantizer_weight",
            "discriminator_factor",
            "discriminator_weight",
            "lecam_regularization_weight",
            "discriminator_start",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"losses.{name}: expected >= 0, got {getattr(self, name)}")
        if self.perceptual_blur > 1 and self.perceptual_blur % 2 == 0:
            raise ConfigError(
                f"losses.perceptual_blur: expected 0 (off) or an odd number of taps, got {self.perceptual_blur}"
            )
        if not 0.0 <= self.lecam_ema_decay < 1.0:
            raise ConfigError(f"losses.lecam_ema_decay: expected in [0, 1), got {self.lecam_ema_decay}")
        if self.discriminator_num_stages < 1:
            raise ConfigError(
                f"losses.discriminator_num_stages: expected >= 1, got {self.discriminator_num_stages}"
            )
        if self.discriminator_blur_resample and self.discriminator_blur_kernel_size not in BLUR_KERNELS:
            raise ConfigError(
                f"losses.discriminator_blur_kernel_size: expected one of {sorted(BLUR_KERNELS)}, "
                f"got {self.discriminator_blur_kernel_size}"
            )
        if self.discriminator_hidden_channels % self.discriminator_norm_groups:
            raise ConfigError(
                f"losses.discriminator_norm_groups: {self.discriminator_norm_groups} does not divide "
                f"discriminator_hidden_channels={self.discriminator_hidden_channels}"
            )

    @classmethod
    def small(cls, **overrides: Any) -> LossConfig:
        """A light discriminator for 32-64 px images on a CPU (32 -> 64 channels, 8x8 logits)."""
        base = dict(
            discriminator_hidden_channels=32,
            discriminator_num_stages=2,
            discriminator_norm_groups=8,
            discriminator_pool_size=8,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossConfig:
        """Build from a mapping (e.g. a YAML ``losses`` section); unknown keys are a ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"losses: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


def build_discriminator(config: LossConfig) -> NLayerDiscriminator:
    """The discriminator described by ``config``."""
    return NLayerDiscriminator(
        hidden_channels=config.discriminator_hidden_channels,
        num_stages=config.discriminator_num_stages,
        blur_resample=config.discriminator_blur_resample,
        blur_kernel_size=config.discriminator_blur_kernel_size,
        norm_groups=config.discriminator_norm_groups,
        pool_size=config.discriminator_pool_size,
    )


class Stage2Loss(nn.Module):
    """Generator and discriminator losses of stage-2 / VQGAN training.

    The discriminator is passed to each call (it has its own optimizer). This module owns
    the frozen perceptual backbones (``perceptual``) and the LeCam running means
    (``lecam``, None when LeCam is off); save ``lecam.state_dict()`` to resume exactly.
    """

    def __init__(self, config: LossConfig | None = None, patch_size: int | None = None) -> None:
        """
        Args:
            config: weights and schedule (default: the TiTok stage-2 recipe).
            patch_size: the decoder's patch side, the period the ``lattice_weight`` and
                ``seam_weight`` penalties look at (None: a decoder without patches; those
                penalties are then a ConfigError).
        """
        super().__init__()
        self.config = config = config or LossConfig()
        for name in ("lattice_weight", "seam_weight"):
            if getattr(config, name) > 0 and patch_size is None:
                raise ConfigError(
                    f"losses.{name}: the {name.split('_')[0]} penalty needs a patch decoder (TiTok); "
                    "this model has no patch size"
                )
        self.patch_size = patch_size
        self.perceptual: PerceptualLoss | None = None
        if config.perceptual_weight > 0 and uses_perceptual(config.perceptual_loss):
            self.perceptual = PerceptualLoss(
                config.perceptual_loss,
                lpips_vgg_weights=config.lpips_vgg_weights,
                lpips_linear_weights=config.lpips_linear_weights,
                convnext_weights=config.convnext_weights,
                allow_missing=config.allow_missing,
                download=config.download_weights,
                classifier_network=config.perceptual_network,
                classifier_taps=config.perceptual_taps,
            )
        self.lecam = LeCamEMA(config.lecam_ema_decay) if config.lecam_regularization_weight > 0 else None

    def discriminator_active(self, global_step: int) -> bool:
        """Whether the GAN term is on and the discriminator should be trained at this step."""
        return global_step >= self.config.discriminator_start

    def perceptual_view(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair (B, C, H, W) as the perceptual network reads it: the same random crop
        (``perceptual_shift``), flip or quarter turn (``perceptual_dihedral``) and blur
        (``perceptual_blur``) for both, in that order; the identity with all three off."""
        cfg = self.config
        x, y = shared_random_crop(x, y, cfg.perceptual_shift)
        if cfg.perceptual_dihedral:
            x, y = shared_dihedral(x, y)
        return binomial_blur(x, cfg.perceptual_blur), binomial_blur(y, cfg.perceptual_blur)

    def _factor(self, global_step: int) -> float:
        return self.config.discriminator_factor if self.discriminator_active(global_step) else 0.0

    def generator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        quantizer_loss: torch.Tensor | float,
        global_step: int,
        discriminator: nn.Module | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of the tokenizer for one batch.

        Args:
            inputs: (B, 3, H, W) real images in [0, 1].
            reconstructions: (B, 3, H, W) decoded images in [0, 1] (gradients flow back here).
            quantizer_loss: scalar quantizer loss of the batch.
            global_step: training step, for the GAN schedule.
            discriminator: needed once ``global_step >= discriminator_start`` (its parameters
                get no gradient from this loss).

        Returns:
            (total scalar loss in float32, logs) where logs holds detached scalars: ``total``;
            the weighted terms ``reconstruction``, ``perceptual``, ``lattice``, ``seam``, ``quantizer``,
            ``gan``
            (0 before ``discriminator_start``); the raw ``gan_raw`` = -mean D(x_rec),
            ``discriminator_factor`` and ``perceptual_lpips`` / ``perceptual_convnext``.
        """
        cfg = self.config
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            x = inputs.float()
            x_rec = reconstructions.float()
            distance = F.mse_loss if cfg.reconstruction_loss == "l2" else F.l1_loss
            rec = cfg.reconstruction_weight * distance(x_rec, x)

            perceptual = x.new_zeros(())
            parts: dict[str, torch.Tensor] = {}
            if self.perceptual is not None:
                perceptual, parts = self.perceptual(*self.perceptual_view(x_rec, x))
            perceptual = cfg.perceptual_weight * perceptual

            lattice = x.new_zeros(())
            if cfg.lattice_weight > 0:
                assert self.patch_size is not None
                lattice = cfg.lattice_weight * lattice_penalty(x_rec, x, self.patch_size)
            seam = x.new_zeros(())
            if cfg.seam_weight > 0:
                assert self.patch_size is not None
                seam = cfg.seam_weight * seam_penalty(x_rec, x, self.patch_size)

            q = torch.as_tensor(quantizer_loss, device=x.device).float().mean()
            q = cfg.quantizer_weight * q

            factor = self._factor(global_step)
            g_raw = x.new_zeros(())
            if factor > 0 and cfg.discriminator_weight > 0:
                if discriminator is None:
                    raise ValueError(f"step {global_step}: the GAN term is on but no discriminator was given")
                with frozen_parameters(discriminator):
                    g_raw = hinge_g_loss(discriminator(x_rec).float())
            gan = cfg.discriminator_weight * factor * g_raw

            total = rec + perceptual + lattice + seam + q + gan
        logs = {
            "total": total.detach(),
            "reconstruction": rec.detach(),
            "perceptual": perceptual.detach(),
            "lattice": lattice.detach(),
            "seam": seam.detach(),
            "quantizer": q.detach(),
            "gan": gan.detach(),
            "gan_raw": g_raw.detach(),
            "discriminator_factor": torch.tensor(factor),
        }
        logs.update({f"perceptual_{k}": v for k, v in parts.items()})
        return total, logs

    def discriminator_loss(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        global_step: int,
        discriminator: nn.Module,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of the discriminator for one batch (call when :meth:`discriminator_active`).

        Reconstructions are detached. The LeCam running means are updated by each call.

        Returns:
            (scalar loss in float32, logs) with ``discriminator`` (total), ``hinge`` (times the
            factor), ``lecam`` (weighted), ``logits_real`` / ``logits_fake`` (batch means) and
            the running means ``ema_logits_real`` / ``ema_logits_fake`` after the update.
        """
        cfg = self.config
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            logits_real = discriminator(inputs.detach().float()).float()
            logits_fake = discriminator(reconstructions.detach().float()).float()
            hinge = self._factor(global_step) * hinge_d_loss(logits_real, logits_fake)
            lecam = logits_real.new_zeros(())
            if self.lecam is not None:
                lecam = cfg.lecam_regularization_weight * self.lecam(logits_real, logits_fake)
            total = hinge + lecam
        logs = {
            "discriminator": total.detach(),
            "hinge": hinge.detach(),
            "lecam": lecam.detach(),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
        }
        if self.lecam is not None:
            logs["ema_logits_real"] = self.lecam.ema_real_logits_mean.detach()[0].clone()
            logs["ema_logits_fake"] = self.lecam.ema_fake_logits_mean.detach()[0].clone()
        return total, logs

    def forward(
        self,
        inputs: torch.Tensor,
        reconstructions: torch.Tensor,
        global_step: int,
        discriminator: nn.Module | None = None,
        quantizer_loss: torch.Tensor | float = 0.0,
        mode: str = "generator",
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`generator_loss` (``mode="generator"``) or :meth:`discriminator_loss`."""
        if mode == "generator":
            return self.generator_loss(inputs, reconstructions, quantizer_loss, global_step, discriminator)
        if mode == "discriminator":
            if discriminator is None:
                raise ValueError("the discriminator step needs a discriminator")
            return self.discriminator_loss(inputs, reconstructions, global_step, discriminator)
        raise ValueError(f"mode must be 'generator' or 'discriminator', got {mode!r}")
