"""``titok train stage2``: the decoder of a stage-1 TiTok learns to produce pixels.

The model starts from ``init_from`` (a stage-1 export folder, a built-in model name, or a
weights file with ``model.preset``), with the teacher VQGAN's codebook in ``pixel_quantize`` and
its decoder in ``pixel_decoder`` (the "vqgan" head). Encoder, latent tokens and quantizer are
frozen (their codes do not change); the decoder, ``pixel_quantize`` and ``pixel_decoder`` are
trained with L2 + perceptual + GAN losses (:mod:`titok.training.tasks.adversarial`). An
``init_from`` that already has the "vqgan" head continues its stage-2 training and needs no
teacher. One with the "pixels" head (a single-stage model such as the built-in ``imagenette64``)
has its ViT decoder fine-tuned to pixels the same way: the paper's "decoder fine-tuning", its
tokens unchanged; ``model.refine_channels`` adds a convolutional refinement after the head, and
``model.decoder_head: conv`` replaces its linear pixel head by a freshly initialised
convolutional upsampler (``model.conv_channels``), which has no patch period.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from titok.errors import ConfigError
from titok.loading.weights import load_strict
from titok.models.titok import TiTok
from titok.training.tasks.adversarial import PixelOutput, TiTokPixelTask
from titok.training.tasks.stage1 import load_teacher

if TYPE_CHECKING:
    from accelerate import Accelerator


def freeze_tokenizer(model: TiTok) -> None:
    """Freeze what produces the tokens: encoder, latent tokens, latent centering (its running
    mean then stays as stage 1 left it) and quantizer, kept in eval mode."""
    parts = [model.encoder, model.quantize]
    if model.latent_centering is not None:
        parts.append(model.latent_centering)
    for part in parts:
        part.requires_grad_(False)
        part.eval()
    model.latent_tokens.requires_grad_(False)


#: Parameters that decoder fine-tuning may add to a trained model, with their fresh initialisation.
NEW_PART_PREFIXES = ("decoder.tail_token", "refiner.")


def with_new_parts(model: TiTok, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` plus ``model``'s freshly initialised parts that ``state`` lacks: the
    ``decoder.tail_token`` (a fixed-length model fine-tuned on prefixes with ``hidden_tail:
    token``) and the ``refiner`` (``model.refine_channels``, which starts as the identity)."""
    state = dict(state)
    for name, value in model.state_dict().items():
        if name not in state and name.startswith(NEW_PART_PREFIXES):
            state[name] = value.detach().clone()
    return state


#: Decoder-head swaps that decoder fine-tuning can make: (head of ``init_from``, new head).
HEAD_SWAPS = {("pixels", "conv")}

#: The parameters of the heads in :data:`HEAD_SWAPS`, which a swap replaces by fresh ones.
HEAD_PARTS = ("decoder.ffn.", "decoder.conv_out.", "refiner.", "upsampler.")


def swap_head(model: TiTok, state: dict[str, torch.Tensor], old_head: str) -> dict[str, torch.Tensor]:
    """``state`` (of a model with ``old_head``) with its head's parameters replaced by ``model``'s
    freshly initialised ones; everything before the head (the ViT decoder) is kept.

    Raises :class:`ConfigError` for a swap not in :data:`HEAD_SWAPS`."""
    new_head = model.config.decoder_head
    if (old_head, new_head) not in HEAD_SWAPS:
        swaps = ", ".join(f"{a} -> {b}" for a, b in sorted(HEAD_SWAPS))
        raise ConfigError(f"decoder_head {old_head!r} cannot become {new_head!r} (possible: {swaps})")
    kept = {k: v for k, v in state.items() if not k.startswith(HEAD_PARTS)}
    fresh = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(HEAD_PARTS)}
    return {**kept, **fresh}


class Stage2Task(TiTokPixelTask):
    """Trains the decoder side of a stage-1 TiTok to pixels."""

    mode = "stage2"

    def build_model(self, accelerator: Accelerator) -> nn.Module:
        recipe = self.recipe
        if not recipe.init_from:
            raise ConfigError(
                f"{recipe.source}: 'init_from' is not set: give the stage-1 export to start from"
            )
        init = TiTok.from_pretrained(recipe.init_from, preset=recipe.model.get("preset"))
        overrides = {k: v for k, v in recipe.model.items() if k != "preset"}
        if recipe.prefix.enabled:
            overrides["variable_length"] = True
        head = init.config.decoder_head
        if head == "proxy":
            teacher = load_teacher(recipe)
            tcfg = teacher.config
            try:
                cfg = dataclasses.replace(
                    init.config,
                    **{
                        **overrides,
                        "decoder_head": "vqgan",
                        "num_proxy_codes": tcfg.codebook_size,
                        "pixel_decoder": dataclasses.replace(tcfg),
                    },
                )
            except ConfigError as exc:
                raise ConfigError(f"{recipe.source}: stage-1 model and teacher do not fit: {exc}") from None
            model = TiTok(cfg)
            state = with_new_parts(model, init.state_dict())
            state["pixel_quantize.embedding.weight"] = teacher.quantize.embedding.weight.detach().cpu()
            state.update({f"pixel_decoder.{k}": v.cpu() for k, v in teacher.decoder.state_dict().items()})
            load_strict(model, state, f"{recipe.init_from} + teacher {recipe.teacher}")
        else:  # "vqgan" (stage 2 continued) or "pixels" (decoder fine-tuning of a single-stage model)
            model = init
            if overrides:
                try:
                    cfg = init.config.updated(**overrides)
                except ConfigError as exc:
                    raise ConfigError(
                        f"{recipe.source}: model overrides do not fit {recipe.init_from}: {exc}"
                    ) from None
                model = TiTok(cfg)
                state = init.state_dict()
                if cfg.decoder_head != head:
                    try:
                        state = swap_head(model, state, head)
                    except ConfigError as exc:
                        raise ConfigError(f"{recipe.source}: {exc}") from None
                load_strict(model, with_new_parts(model, state), str(recipe.init_from))
        freeze_tokenizer(model)
        self.image_size = model.config.image_size
        return model

    def reconstruct(
        self, model: nn.Module, images: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> PixelOutput:
        out = model(images, lengths)
        return PixelOutput(out.decoded, out.quantizer.loss)
