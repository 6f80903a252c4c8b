"""``titok train stage1``: TiTok learns to predict a frozen VQGAN teacher's codes ("proxy codes").

Targets are the teacher's code ids of each training image (B, g, g), computed on the fly in
float32 or, with ``teacher_codes: cache`` (needs ``data.augment: false``), once per image key.
Loss = cross-entropy of the decoder's code logits + ``losses.quantizer_weight`` * the quantizer
loss (codebook + commitment). The teacher is ``teacher:`` in the recipe: ``maskgit-vqgan`` (the
authors' published model, from the hub cache or a download), a weights file of that
architecture, or a VQGAN export folder written by ``titok train vqgan``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import ConfigError
from titok.loading.loaders import load_vqgan
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN
from titok.training.prefix import prefix_preview_rows, repeat_for_copies
from titok.training.task import ImageTask, StepContext

if TYPE_CHECKING:
    from accelerate import Accelerator

    from titok.training.config import Recipe


def load_teacher(recipe: Recipe, device: torch.device | str = "cpu") -> VQGAN:
    """The recipe's frozen teacher VQGAN, in eval mode on ``device``."""
    if not recipe.teacher:
        raise ConfigError(
            f"{recipe.source}: 'teacher' is not set: give a VQGAN export folder (titok train vqgan), the "
            "published weights file maskgit-vqgan-imagenet-f16-256.bin, or 'maskgit-vqgan'"
        )
    teacher = load_vqgan(recipe.teacher)
    teacher.requires_grad_(False)
    return teacher.eval().to(device)


class Stage1Task(ImageTask):
    """Trains a TiTok with the "proxy" decoder head on a teacher's codes."""

    mode = "stage1"

    def build(self, accelerator: Accelerator) -> dict[str, nn.Module]:
        recipe = self.recipe
        self.teacher = load_teacher(recipe, accelerator.device)
        tcfg = self.teacher.config
        cfg = recipe.titok_config(decoder_head="proxy", num_proxy_codes=tcfg.codebook_size)
        if cfg.patch_size != tcfg.downsample_factor:
            raise ConfigError(
                f"{recipe.source}: model.patch_size {cfg.patch_size} differs from the teacher's downsampling "
                f"factor {tcfg.downsample_factor}: the decoder's grid must match the teacher's code grid"
            )
        if recipe.teacher_codes == "cache" and recipe.data.augment:
            raise ConfigError(
                f"{recipe.source}: teacher_codes: cache needs data.augment: false (random crops and flips "
                "change an image's codes)"
            )
        self.image_size = cfg.image_size
        self.quantizer_weight = recipe.loss_config().quantizer_weight
        self.cache: dict[str, torch.Tensor] | None = {} if recipe.teacher_codes == "cache" else None
        return {"model": TiTok(cfg)}

    @torch.no_grad()
    def teacher_codes(self, images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        """Teacher code ids (B, g, g) of ``images`` (float32, from the cache when enabled)."""
        with torch.autocast(images.device.type, enabled=False):
            if self.cache is None:
                return self.teacher.encode(images.float())
            todo = [i for i, k in enumerate(keys) if k not in self.cache]
            if todo:
                fresh = self.teacher.encode(images[todo].float()).to("cpu", torch.int32)
                for i, codes in zip(todo, fresh, strict=True):
                    self.cache[keys[i]] = codes
            return torch.stack([self.cache[k] for k in keys]).to(images.device, torch.long)

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        images = batch["image"]
        targets = self.teacher_codes(images, batch["key"])
        out = ctx.module("model")(images, self.draw_prefix_lengths(ctx.unwrapped("model"), len(images), ctx))
        logits = out.decoded.float()
        targets = repeat_for_copies(targets, logits.shape[0])  # prefix.with_full
        cross_entropy = F.cross_entropy(logits, targets)
        q = out.quantizer
        total = cross_entropy + self.quantizer_weight * q.loss
        ctx.optimize("model", total)
        logs = {
            "total": total.detach(),
            "cross_entropy": cross_entropy.detach(),
            "quantizer": (self.quantizer_weight * q.loss).detach(),
            "code_accuracy": (logits.detach().argmax(1) == targets).float().mean(),
        }
        if q.codebook_loss is not None and q.commitment_loss is not None:
            logs.update(codebook=q.codebook_loss.detach(), commitment=q.commitment_loss.detach())
        return logs

    def preview(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        assert isinstance(model, TiTok)
        teacher_rec = self.teacher.decode(self.teacher.encode(images))

        def decode(x: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
            return self.teacher.decode(model.decode_proxy_codes(model.encode(x, num_tokens=num_tokens)))

        return [teacher_rec, *prefix_preview_rows(model, images, decode)]

    def export(self, model: nn.Module, directory: Path) -> Path:
        assert isinstance(model, TiTok)
        return model.save_pretrained(directory)
