"""The contract between the training engine and a training mode ("task").

The engine (:mod:`titok.training.engine`) owns everything a mode does not care about:
processes, data, mixed precision, gradient accumulation, optimizers and schedules, EMA,
checkpoints, logging and export. A task says what it reads (:meth:`Task.loader`,
:meth:`Task.to_device`), which modules exist and which of them are optimised, how a batch turns
into losses, what its preview grid shows and how to export. Modes that read images share
:class:`ImageTask`; the generator reads pretokenized sequences. A new mode is one more task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from titok.data import DataConfig, build_loader, resolve_source
from titok.errors import ConfigError, DataError
from titok.training.prefix import draw_lengths

if TYPE_CHECKING:
    from accelerate import Accelerator

    from titok.training.config import Recipe


@dataclass(frozen=True)
class OptimizerSpec:
    """One AdamW optimizer and its learning-rate schedule.

    Attributes:
        name: key used by :meth:`StepContext.optimize` and in checkpoints.
        module: the key of the trained module in :meth:`Task.build`'s result.
        learning_rate: peak learning rate.
        start_step: the optimizer first steps at this global step; its schedule counts from
            there (the discriminator starts at ``losses.discriminator_start``).
    """

    name: str
    module: str
    learning_rate: float
    start_step: int = 0


class BatchLoader(Protocol):
    """This process's endless, resumable training batches (what :meth:`Task.loader` returns)."""

    skipped: dict[str, int]
    """Damaged samples skipped so far, per kind (empty for data that cannot be damaged)."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StepContext(Protocol):
    """What a task sees of the engine during one micro-step."""

    step: int
    """Global optimizer step being computed (0-based: the number of steps done before)."""

    accelerator: Accelerator

    def module(self, name: str) -> nn.Module:
        """A trained module as prepared for training (wrapped for distributed data parallel)."""
        ...

    def unwrapped(self, name: str) -> nn.Module:
        """A trained module without any wrapper (for calls that must not synchronise)."""
        ...

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` and, on the last micro-step of a step, clip and step optimizer ``name``."""
        ...


class Task(ABC):
    """A training mode.

    Args:
        recipe: the whole recipe.
    """

    #: The recipe mode this task trains.
    mode: str = ""
    #: The log key shown in the progress bar and used for "loss falls" checks.
    main_loss: str = "total"

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    @abstractmethod
    def build(self, accelerator: Accelerator) -> dict[str, nn.Module]:
        """Create the trained modules (on the CPU; key ``"model"`` is exported and averaged).

        Frozen helpers (a teacher, loss networks) are kept by the task itself, moved to
        ``accelerator.device``. Called on every process after seeding with the same seed.
        """

    def optimizers(self) -> list[OptimizerSpec]:
        """The optimizers; default: one for ``"model"`` at ``optimizer.learning_rate``."""
        return [OptimizerSpec("model", "model", self.recipe.optimizer.learning_rate)]

    def check_data(self) -> None:
        """Fail fast on unusable data before any model is built (default: nothing to check)."""
        return None

    @abstractmethod
    def loader(self, rank: int, world_size: int) -> BatchLoader:
        """This process's part of the training data (called after :meth:`build`)."""

    @abstractmethod
    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """``batch`` as :meth:`train_step` takes it, its tensors on ``device``."""

    @abstractmethod
    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One micro-batch: compute the losses and call ``ctx.optimize`` for each optimizer.

        Args:
            batch: ``{"image": (B, 3, S, S) on the device in [0, 1], "label": (B,), "key": [B]}``.
            ctx: the engine's step context.

        Returns:
            Detached scalar tensors to log (same keys on every process).
        """

    @abstractmethod
    def preview_grid(self, model: nn.Module, batch: dict[str, Any], count: int) -> list[torch.Tensor]:
        """The rows of the picture grid written every ``experiment.image_every`` steps: each
        (count, 3, S, S) in [0, 1]; no rows, no grid.

        ``model`` is the unwrapped model carrying the EMA weights (if any), in eval mode;
        ``batch`` is the step's batch on the device.
        """

    @abstractmethod
    def export(self, model: nn.Module, directory: Path) -> Path:
        """Write ``model`` in the ``save_pretrained`` format of its kind into ``directory``."""

    def state_dict(self) -> dict[str, Any]:
        """Task state shared by all processes, saved in checkpoints (default: none)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (default: nothing to restore)."""
        return None

    def rank_state_dict(self) -> dict[str, Any]:
        """Task state of this process, saved per process (default: none)."""
        return {}

    def load_rank_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`rank_state_dict` (default: nothing to restore)."""
        return None


class ImageTask(Task):
    """A mode trained on images: ``recipe.data`` read by :func:`titok.data.build_loader`.

    :meth:`build` sets :attr:`image_size` (the model's resolution), used when
    ``data.image_size`` is not given. The preview grid is the batch's first images over the
    rows of :meth:`preview`.
    """

    #: The model's input side in pixels, set by :meth:`build`.
    image_size: int | None = None

    def check_data(self) -> None:
        try:
            resolve_source(self.recipe.data.train)
        except DataError as exc:
            raise DataError(
                f"{self.recipe.source}: data.train: {exc}; point the recipe at your images with the "
                "override data.train=PATH (a folder of images, an ImageFolder tree, tar shards or a list "
                "file) or set TITOK_DATA=PATH"
            ) from None

    def data_config(self) -> DataConfig:
        """The loader settings: ``recipe.data`` (every field but ``train`` is a
        :class:`~titok.data.DataConfig` field of the same name) plus the loop's batch size and
        seed, endless."""
        d, t = self.recipe.data, self.recipe.training
        size = d.image_size or self.image_size
        if not size:
            raise ConfigError(f"{self.recipe.source}: 'data.image_size' is not set")
        assert d.train is not None
        shared = {f.name: getattr(d, f.name) for f in fields(d) if f.name != "train"}
        shared["image_size"] = int(size)
        return DataConfig(path=d.train, batch_size=t.batch_size, seed=t.seed, endless=True, **shared)

    def loader(self, rank: int, world_size: int) -> BatchLoader:
        return build_loader(self.data_config(), rank=rank, world_size=world_size)

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        batch["image"] = batch["image"].to(device, non_blocking=True)
        batch["label"] = batch["label"].to(device, non_blocking=True)
        return batch

    def draw_prefix_lengths(self, model: nn.Module, batch_size: int, ctx: StepContext) -> torch.Tensor | None:
        """This step's token-prefix lengths (B,) for a TiTok ``model`` (unwrapped), or None when
        ``recipe.prefix`` is off (:func:`titok.training.prefix.draw_lengths`)."""
        return draw_lengths(
            self.recipe.prefix,
            model.config.num_latent_tokens,
            batch_size,
            ctx.step,
            self.recipe.training.seed,
            ctx.accelerator.process_index,
            ctx.accelerator.device,
        )

    def preview_grid(self, model: nn.Module, batch: dict[str, Any], count: int) -> list[torch.Tensor]:
        images = batch["image"][:count]
        return [images, *self.preview(model, images)]

    @abstractmethod
    def preview(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """Rows shown under ``images`` (N, 3, S, S): each (N, 3, S, S) in [0, 1] (reconstructions)."""
