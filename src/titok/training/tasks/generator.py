"""``titok train generator``: a class-conditional MaskGIT generator on pretokenized tokens.

The data is a folder written by ``titok pretokenize`` (:mod:`titok.pretokenize`): K codes per
image, with its class label and, unless made with ``--no-flip``, the codes of the mirrored image.
Each step, as in the authors' MaskGIT training (bytedance/1d-tokenizer):

* a random half of the sequences use the mirrored image's codes (``data.augment``);
* each sequence masks ``round(K * arccos(t) / (pi / 2))`` random positions, ``t ~ U(0, 1)``
  (:func:`titok.sampling.random_masking`);
* each label is replaced by the "no class" token with probability ``model.class_label_dropout``,
  which trains the unconditional model used by classifier-free guidance;
* the loss is cross-entropy with label smoothing (``losses.label_smoothing``) at every
  position, masked positions weighted 1 and unmasked ones ``losses.loss_weight_unmasked_token``,
  normalised by the sum of the weights (:func:`masked_token_loss`).

The recipe's ``model`` section holds :class:`~titok.models.generator.GeneratorConfig` fields on
top of a ``preset``; ``codebook_size`` and ``seq_len`` come from the tokens. ``model.tokenizer``
(default: the tokenizer folder the tokens were made with, if it exists) decodes the sample grids
written every ``experiment.image_every`` steps and is recorded in the exported model, whose
``class_names`` (``model.class_names``) let ``titok generate`` take class names.

Its batches come from :class:`~titok.training.token_loader.TokenLoader` (:meth:`GeneratorTask.loader`);
run it like every mode, ``titok.training.train(GeneratorTask(recipe))``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from titok.errors import CheckpointError, ConfigError, DataError, TitokError
from titok.loading.weights import load_strict
from titok.models.generator import Generator, GeneratorConfig, get_generator_preset, load_generator
from titok.models.titok import TiTok
from titok.pretokenize import TokenDataset, load_tokens
from titok.sampling import random_masking
from titok.training.config import GENERATOR_LOSS_KEYS, DataSection, Recipe
from titok.training.prefix import draw_lengths
from titok.training.task import StepContext, Task
from titok.training.token_loader import TokenLoader

if TYPE_CHECKING:
    from accelerate import Accelerator

logger = logging.getLogger("titok.training")

#: ``data`` keys that apply to token data; the others are for images.
TOKEN_DATA_KEYS = ("train", "augment", "max_samples")


def masked_token_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    label_smoothing: float = 0.1,
    unmasked_weight: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' MaskGIT loss and the accuracy at masked positions.

    Args:
        logits: FloatTensor [B, K, C] at every image position.
        targets: LongTensor [B, K], the unmasked codes.
        mask: BoolTensor [B, K], True where the input was masked.
        label_smoothing: label smoothing of the cross-entropy.
        unmasked_weight: weight of unmasked positions (masked ones weigh 1).

    Returns:
        ``(loss, accuracy)``: the weighted mean cross-entropy and the fraction of masked
        positions whose most likely code is the target (both scalars).
    """
    ce = F.cross_entropy(logits.transpose(1, 2), targets, label_smoothing=label_smoothing, reduction="none")
    weights = torch.where(mask, 1.0, unmasked_weight).to(ce.dtype)
    loss = (ce * weights).sum() / (weights.sum() + 1e-8)
    hits = (logits.detach().argmax(-1) == targets) & mask
    accuracy = hits.sum() / mask.sum().clamp(min=1)
    return loss, accuracy


def _local_path_or_name(spec: str) -> str:
    """An existing local path made absolute (so the exported config works from anywhere)."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def generator_config(recipe: Recipe, meta: dict[str, Any]) -> GeneratorConfig:
    """The architecture of a ``generator`` recipe for tokens described by ``meta``.

    ``model.preset`` (default: the plain :class:`GeneratorConfig` defaults) with the other
    ``model`` keys applied; ``codebook_size`` and ``seq_len`` are the tokens' (giving other
    values is an error).
    """
    src = recipe.source
    fields_ = {k: v for k, v in recipe.model.items() if k != "preset"}
    if recipe.prefix.enabled:
        fields_["variable_length"] = True
    for key, value in (("codebook_size", meta.get("codebook_size")), ("seq_len", meta.get("num_tokens"))):
        if value is None:
            raise DataError(f"{recipe.data.train}: meta.json has no {key!r}")
        if key in fields_ and fields_[key] != value:
            raise ConfigError(
                f"{src}: 'model.{key}' is {fields_[key]!r} but the tokens in {recipe.data.train} have {value}"
            )
        fields_[key] = int(value)
    if (
        fields_.get("tokenizer") is None
        and isinstance(meta.get("model"), str)
        and Path(meta["model"]).is_dir()
    ):
        fields_["tokenizer"] = meta["model"]  # the tokenizer the tokens were made with
    if isinstance(fields_.get("tokenizer"), str):
        fields_["tokenizer"] = _local_path_or_name(fields_["tokenizer"])
    try:
        preset = recipe.model.get("preset")
        base = dataclasses.replace(get_generator_preset(str(preset)).config) if preset else GeneratorConfig()
        return GeneratorConfig.from_dict({**base.to_dict(), **fields_})
    except ConfigError as exc:
        raise ConfigError(f"{src}: model: {exc}") from None


class GeneratorTask(Task):
    """Trains a :class:`~titok.models.generator.Generator` with the masked-token loss."""

    mode = "generator"

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        losses = {**GENERATOR_LOSS_KEYS, **recipe.losses}
        self.label_smoothing = float(losses["label_smoothing"])
        self.unmasked_weight = float(losses["loss_weight_unmasked_token"])
        self.data: TokenDataset | None = None
        self.tokenizer: TiTok | None = None

    def check_data(self) -> None:
        """Refuse image-data keys and a teacher, which do not apply to token training (the token
        folder itself is read and checked by :meth:`build`)."""
        src, defaults = self.recipe.source, DataSection()
        for f in dataclasses.fields(DataSection):
            if f.name not in TOKEN_DATA_KEYS and getattr(self.recipe.data, f.name) != getattr(
                defaults, f.name
            ):
                raise ConfigError(
                    f"{src}: 'data.{f.name}' does not apply to generator training, which reads a pretokenized "
                    f"folder (its keys: {', '.join(TOKEN_DATA_KEYS)})"
                )
        if self.recipe.teacher:
            raise ConfigError(f"{src}: 'teacher' does not apply to generator training")

    def load_data(self) -> TokenDataset:
        """The recipe's token data (first ``data.max_samples``), labels checked."""
        recipe = self.recipe
        try:
            data = load_tokens(str(recipe.data.train))
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{recipe.source}: data.train: cannot read tokens ({exc})") from None
        except DataError as exc:
            raise DataError(f"{recipe.source}: data.train: {exc}") from None
        n = recipe.data.max_samples
        if n is not None:
            flips = data.tokens_flip[:n] if data.tokens_flip is not None else None
            data = TokenDataset(data.tokens[:n], flips, data.labels[:n], data.meta)
        if (data.labels < 0).any():
            raise DataError(
                f"{recipe.data.train}: {int((data.labels < 0).sum())} samples have no class label (-1); "
                "class-conditional training needs labelled data"
            )
        return data

    def build(self, accelerator: Accelerator) -> dict[str, nn.Module]:
        recipe = self.recipe
        self.data = self.load_data()
        self.config = config = generator_config(recipe, self.data.meta)
        top = int(self.data.labels.max())
        if top >= config.num_classes:
            raise ConfigError(
                f"{recipe.source}: the tokens have class labels up to {top} but model.num_classes is "
                f"{config.num_classes}"
            )
        model = Generator.from_config(config)
        if recipe.init_from:
            start = load_generator(recipe.init_from)
            try:
                load_strict(model, start.state_dict(), str(recipe.init_from))
            except CheckpointError as exc:
                raise ConfigError(f"{recipe.source}: init_from does not fit model: {exc}") from None
        e = recipe.experiment
        if config.tokenizer and accelerator.is_main_process and e.image_every and e.num_images:
            self.tokenizer = self._load_tokenizer(config, accelerator.device)
        elif accelerator.is_main_process and e.image_every and e.num_images:
            logger.warning("no model.tokenizer: sample grids are not written")
        return {"model": model}

    def _load_tokenizer(self, config: GeneratorConfig, device: torch.device) -> TiTok:
        from titok.loading.loaders import load_tokenizer

        assert config.tokenizer is not None
        try:
            tokenizer = load_tokenizer(config.tokenizer)
        except TitokError as exc:
            raise ConfigError(f"{self.recipe.source}: model.tokenizer: {exc}") from None
        if tokenizer.num_tokens != config.seq_len or tokenizer.config.codebook_size != config.codebook_size:
            raise ConfigError(
                f"{self.recipe.source}: model.tokenizer {config.tokenizer} makes {tokenizer.num_tokens} tokens of "
                f"{tokenizer.config.codebook_size} codes, the training tokens are {config.seq_len} of "
                f"{config.codebook_size}"
            )
        tokenizer.requires_grad_(False)
        return tokenizer.eval().to(device)

    def loader(self, rank: int, world_size: int) -> TokenLoader:
        """This process's endless batches (after :meth:`build`)."""
        assert self.data is not None
        t = self.recipe.training
        return TokenLoader(self.data, t.batch_size, t.seed, rank, world_size, flip=self.recipe.data.augment)

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        tokens, labels = batch["tokens"], batch["label"]
        lengths = draw_lengths(
            self.recipe.prefix,
            tokens.shape[1],
            1,
            ctx.step,
            self.recipe.training.seed,
            ctx.accelerator.process_index,
        )
        if lengths is not None:  # one prefix length per batch: the sequences stay rectangular
            tokens = tokens[:, : int(lengths[0])]
        masked, mask = random_masking(tokens, self.config.mask_token_id)
        logits = ctx.module("model")(masked, labels)  # drops labels with config.class_label_dropout
        loss, accuracy = masked_token_loss(
            logits.float(), tokens, mask, self.label_smoothing, self.unmasked_weight
        )
        ctx.optimize("model", loss)
        return {"total": loss.detach(), "masked_accuracy": accuracy, "mask_ratio": mask.float().mean()}

    def preview_labels(self, n: int) -> list[int]:
        """``n`` class ids spread evenly over the classes (the same every time)."""
        return [i * self.config.num_classes // n for i in range(n)]

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """``tokens`` (B, K) and ``label`` (B,) on ``device``; ``index`` stays."""
        return {
            "tokens": batch["tokens"].to(device, non_blocking=True),
            "label": batch["label"].to(device),
            "index": batch["index"],
        }

    def preview_grid(self, model: nn.Module, batch: dict[str, Any], count: int) -> list[torch.Tensor]:
        """One row of ``count`` samples (fixed classes and seed, the model's sampling defaults),
        decoded by the tokenizer; no rows without one. The batch is not shown (it is tokens)."""
        if self.tokenizer is None:
            return []
        assert isinstance(model, Generator)
        device = next(model.parameters()).device
        rng = torch.Generator(device=device).manual_seed(0)
        tokens = model.generate(self.preview_labels(count), generator=rng)
        return [self.tokenizer.decode(tokens.to(self.tokenizer.device)).float()]

    def export(self, model: nn.Module, directory: Path) -> Path:
        assert isinstance(model, Generator)
        return model.save_pretrained(directory)
