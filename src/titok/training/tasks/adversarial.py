"""Common ground of the modes trained to pixels with the VQGAN recipe (VQGAN, stage 2, single stage).

Generator loss: ``reconstruction_weight * L2 + perceptual_weight * perceptual + quantizer_weight
* quantizer loss + discriminator_weight * factor * GAN`` (:class:`titok.losses.Stage2Loss`),
plus a mode's own term (the VAE's KL). The patch discriminator has its own AdamW optimizer and
schedule, and trains with the hinge loss and LeCam from ``losses.discriminator_start`` on.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from titok.losses import Stage2Loss, build_discriminator
from titok.models.titok import TiTok
from titok.training.prefix import prefix_preview_rows, repeat_for_copies
from titok.training.task import ImageTask, OptimizerSpec, StepContext

if TYPE_CHECKING:
    from accelerate import Accelerator


@dataclass
class PixelOutput:
    """What a pixel mode's model gives for one batch.

    Attributes:
        reconstructions: (B, 3, H, W) raw decoder output (not clamped).
        quantizer_loss: scalar passed to the loss as its quantizer term (weighted there).
        extra_loss: a mode's own weighted term added to the generator loss (or None).
        logs: more detached scalars to log.
    """

    reconstructions: torch.Tensor
    quantizer_loss: torch.Tensor | float = 0.0
    extra_loss: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class PixelTask(ImageTask):
    """A mode whose model reconstructs pixels, trained against a discriminator."""

    image_size: int

    @abstractmethod
    def build_model(self, accelerator: Accelerator) -> nn.Module:
        """The model to train (and set ``self.image_size``)."""

    @abstractmethod
    def reconstruct(
        self, model: nn.Module, images: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> PixelOutput:
        """Training forward pass of ``model`` (the prepared one) on ``images`` (B, 3, H, W),
        decoding the first ``lengths[i]`` tokens of image i (None: all; TiTok only)."""

    def prefix_lengths(self, batch_size: int, ctx: StepContext) -> torch.Tensor | None:
        """This step's token-prefix lengths (B,), or None (see :mod:`titok.training.prefix`)."""
        return None

    def patch_size(self, model: nn.Module) -> int | None:
        """The side of the blocks ``model`` decodes with one head (None: no patches), for the
        ``losses.lattice_weight`` penalty."""
        return None

    def build(self, accelerator: Accelerator) -> dict[str, nn.Module]:
        model = self.build_model(accelerator)
        self.loss_config = self.recipe.loss_config()
        self.loss = Stage2Loss(self.loss_config, self.patch_size(model)).to(accelerator.device)
        return {"model": model, "discriminator": build_discriminator(self.loss_config)}

    def optimizers(self) -> list[OptimizerSpec]:
        o = self.recipe.optimizer
        start = min(self.loss_config.discriminator_start, self.recipe.training.max_train_steps)
        return [
            OptimizerSpec("model", "model", o.learning_rate),
            OptimizerSpec("discriminator", "discriminator", o.discriminator_learning_rate, start_step=start),
        ]

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        images = batch["image"]
        out = self.reconstruct(ctx.module("model"), images, self.prefix_lengths(images.shape[0], ctx))
        images = repeat_for_copies(images, out.reconstructions.shape[0])  # prefix.with_full
        active = self.loss.discriminator_active(ctx.step)
        total, logs = self.loss.generator_loss(
            images,
            out.reconstructions,
            out.quantizer_loss,
            ctx.step,
            # The plain module: the generator's use must not take part in gradient syncing.
            discriminator=ctx.unwrapped("discriminator") if active else None,
        )
        if out.extra_loss is not None:
            total = total + out.extra_loss
            logs["total"] = total.detach()
        logs.update(out.logs)
        ctx.optimize("model", total)
        if active:
            d_loss, d_logs = self.loss.discriminator_loss(
                images, out.reconstructions, ctx.step, ctx.module("discriminator")
            )
            ctx.optimize("discriminator", d_loss)
            logs.update({f"discriminator/{k}": v for k, v in d_logs.items()})
        return logs

    def rank_state_dict(self) -> dict[str, Any]:
        # LeCam's running means follow this process's own logits.
        return {"lecam": self.loss.lecam.state_dict()} if self.loss.lecam is not None else {}

    def load_rank_state_dict(self, state: dict[str, Any]) -> None:
        if self.loss.lecam is not None and "lecam" in state:
            self.loss.lecam.load_state_dict(state["lecam"])


class TiTokPixelTask(PixelTask):
    """A pixel task whose model is a TiTok (stage 2, single stage): previews and export."""

    def prefix_lengths(self, batch_size: int, ctx: StepContext) -> torch.Tensor | None:
        return self.draw_prefix_lengths(ctx.unwrapped("model"), batch_size, ctx)

    def patch_size(self, model: nn.Module) -> int | None:
        assert isinstance(model, TiTok)
        return model.config.patch_size

    def preview(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        assert isinstance(model, TiTok)
        return prefix_preview_rows(model, images, model.reconstruct)

    def export(self, model: nn.Module, directory: Path) -> Path:
        assert isinstance(model, TiTok)
        return model.save_pretrained(directory)
