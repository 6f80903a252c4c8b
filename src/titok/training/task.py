"""The contract between the training engine and a training mode ("task").

The engine (:mod:`titok.training.engine`) owns everything a mode does not care about:
processes, data, mixed precision, gradient accumulation, optimizers and schedules, EMA,
checkpoints, logging and export. A task only says which modules exist, which of them are
optimised, how a batch turns into losses, how to show reconstructions and how to export.
A new mode (e.g. a generator trained on pretokenized tokens) is one more :class:`Task`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

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
    def preview(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        """Rows of a picture grid for ``images`` (N, 3, S, S): each (N, 3, S, S) in [0, 1].

        ``model`` is the unwrapped model carrying the EMA weights (if any); the input row
        is added by the engine.
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
