"""``titok train vqgan``: a 2D MaskGIT-style VQGAN trained from scratch, to serve as a stage-1 teacher.

The recipe's ``model`` section holds :class:`titok.models.VQGANConfig` fields and
``data.image_size`` the training resolution (a multiple of the downsampling factor). The export
is loadable by :func:`titok.loading.load_vqgan` and usable as ``teacher:`` of a stage-1 recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from titok.errors import ConfigError
from titok.loading.weights import save_model
from titok.models.vqgan import VQGAN
from titok.training.tasks.adversarial import PixelOutput, PixelTask

if TYPE_CHECKING:
    from accelerate import Accelerator


class VQGANTask(PixelTask):
    """Trains a :class:`~titok.models.VQGAN` with L2 + perceptual + GAN + quantizer losses."""

    mode = "vqgan"

    def build_model(self, accelerator: Accelerator) -> nn.Module:
        cfg = self.recipe.vqgan_config()
        size = self.recipe.data.image_size
        src = self.recipe.source
        if size is None:
            raise ConfigError(f"{src}: 'data.image_size' is required to train a VQGAN")
        if size % cfg.downsample_factor:
            raise ConfigError(
                f"{src}: data.image_size {size} is not a multiple of the VQGAN's downsampling factor "
                f"{cfg.downsample_factor} (2 ** (len(model.channel_mult) - 1))"
            )
        self.image_size = size
        self.codebook_size = cfg.codebook_size
        try:
            return VQGAN(cfg)
        except ValueError as exc:  # e.g. channels not divisible by the 32 GroupNorm groups
            raise ConfigError(f"{src}: model: {exc}") from None

    def reconstruct(
        self, model: nn.Module, images: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> PixelOutput:
        rec, q = model(images)
        assert q.indices is not None
        usage = torch.tensor(q.indices.unique().numel() / self.codebook_size)
        logs = {"codebook_usage": usage}
        if q.codebook_loss is not None and q.commitment_loss is not None:
            logs.update(codebook=q.codebook_loss.detach(), commitment=q.commitment_loss.detach())
        return PixelOutput(rec, q.loss, logs=logs)

    def preview(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        assert isinstance(model, VQGAN)
        return [model.decode(model.encode(images))]

    def export(self, model: nn.Module, directory: Path) -> Path:
        assert isinstance(model, VQGAN)
        return save_model(model, directory, kind="vqgan", config=model.config.to_dict())
