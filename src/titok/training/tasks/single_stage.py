"""``titok train single-stage``: TiTok trained straight to pixels from scratch (no teacher).

The baseline of the paper's two-stage recipe: the "pixels" decoder head, trained with the VQGAN
recipe (L2 + perceptual + GAN + ``quantizer_weight`` * quantizer loss). With
``model.quantize_mode: vae`` the tokens are continuous and the quantizer term is replaced by
``losses.kl_weight`` * KL to N(0, I).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from titok.models.titok import TiTok
from titok.training.tasks.adversarial import PixelOutput, TiTokPixelTask

if TYPE_CHECKING:
    from accelerate import Accelerator


class SingleStageTask(TiTokPixelTask):
    """Trains a TiTok with the "pixels" head (VQ or VAE tokens)."""

    mode = "single_stage"

    def build_model(self, accelerator: Accelerator) -> nn.Module:
        cfg = self.recipe.titok_config(decoder_head="pixels")
        self.image_size = cfg.image_size
        self.vae = cfg.quantize_mode == "vae"
        self.kl_weight = float(self.recipe.loss_extra("kl_weight"))
        return TiTok(cfg)

    def reconstruct(
        self, model: nn.Module, images: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> PixelOutput:
        out = model(images, lengths)
        q = out.quantizer
        if self.vae:
            assert q.kl is not None
            kl = self.kl_weight * q.kl
            return PixelOutput(
                out.decoded, 0.0, extra_loss=kl, logs={"kl": kl.detach(), "kl_raw": q.kl.detach()}
            )
        logs = {}
        if q.codebook_loss is not None and q.commitment_loss is not None:
            logs = {"codebook": q.codebook_loss.detach(), "commitment": q.commitment_loss.detach()}
        if q.indices is not None:
            # Distinct codes in this batch: a collapsing codebook shows here first.
            logs["codes_in_batch"] = torch.tensor(float(q.indices.unique().numel()))
        return PixelOutput(out.decoded, q.loss, logs=logs)
