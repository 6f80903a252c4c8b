"""One optimizer step as the engine runs it for a task: backward, clipping, the non-finite guard.

:class:`EngineStepContext` is the :class:`~titok.training.task.StepContext` the engine hands
to tasks. A loss or gradient norm that is not finite on any process stops the run with
:class:`TrainingDiverged` naming the step (``training.on_nonfinite: stop``, the default) or
skips the update and counts it (``skip``); :func:`check_finite` refuses to write weights that
are not finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from titok.errors import TitokError
from titok.training.task import OptimizerSpec

if TYPE_CHECKING:
    from pathlib import Path

    from accelerate import Accelerator

    from titok.training.config import TrainingSection


@dataclass
class EngineOptimizer:
    """An optimizer as the engine holds it: its spec, the prepared optimizer, its schedule and
    the parameters it clips."""

    spec: OptimizerSpec
    optimizer: Any  # accelerate's AcceleratedOptimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    params: list[nn.Parameter]


class TrainingDiverged(TitokError):
    """A loss or gradient stopped being finite: the run stops before writing non-finite weights."""


class EngineStepContext:
    """The :class:`~titok.training.task.StepContext` the engine hands to tasks.

    Args:
        accelerator: the run's accelerator.
        prepared: trained modules as prepared for training (wrapped for DDP), by name.
        modules: the same modules unwrapped (and the frozen ones), by name.
        optimizers: the engine's optimizers, by name.
        training: the recipe's ``training`` section (clipping, precision, ``on_nonfinite``).
        nonfinite_skipped: counts of skipped updates per optimizer, updated in place.
        output_dir: the run folder (named when a run diverges).
    """

    def __init__(
        self,
        accelerator: Accelerator,
        prepared: dict[str, nn.Module],
        modules: dict[str, nn.Module],
        optimizers: dict[str, EngineOptimizer],
        training: TrainingSection,
        nonfinite_skipped: dict[str, int],
        output_dir: Path,
    ) -> None:
        self.accelerator = accelerator
        self._prepared, self._modules, self._optimizers = prepared, modules, optimizers
        self._training = training
        self._skipped = nonfinite_skipped
        self._output_dir = output_dir
        self.step = 0
        self.logs: dict[str, float] = {}

    def module(self, name: str) -> nn.Module:
        return self._prepared[name]

    def unwrapped(self, name: str) -> nn.Module:
        return self._modules[name]

    def optimize(self, name: str, loss: torch.Tensor) -> None:
        opt = self._optimizers[name]
        if self._nonfinite(
            name,
            loss.detach().float().isfinite().all(),
            lambda: f"the {name} loss is {float(loss.detach()):g}",
        ):
            return
        self.accelerator.backward(loss)
        if not self.accelerator.sync_gradients:
            return
        self.accelerator.unscale_gradients(optimizer=opt.optimizer)
        max_norm = self._training.max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(opt.params, max_norm if max_norm else float("inf"))
        # fp16's grad scaler skips steps with overflowing gradients itself.
        if self._training.mixed_precision != "fp16" and self._nonfinite(
            name, norm.isfinite(), lambda: f"the {name} gradient norm is {float(norm):g}"
        ):
            opt.optimizer.zero_grad(set_to_none=True)
            return
        self.logs[f"lr/{name}"] = float(opt.optimizer.param_groups[0]["lr"])
        self.logs[f"grad_norm/{name}"] = float(norm)
        opt.optimizer.step()
        opt.scheduler.step()
        opt.optimizer.zero_grad(set_to_none=True)

    def _nonfinite(self, name: str, finite: torch.Tensor, what: Callable[[], str]) -> bool:
        """False if ``finite`` holds on every process; else stop (``training.on_nonfinite: stop``)
        with a :class:`TrainingDiverged` naming the step, or count and skip the update (``skip``)."""
        bad = (~finite).float().reshape(1)
        if self.accelerator.num_processes > 1:  # every process takes the same decision
            bad = self.accelerator.reduce(bad.to(self.accelerator.device), reduction="sum")
        if float(bad.sum()) == 0:
            return False
        if self._training.on_nonfinite == "skip":
            self._skipped[name] = self._skipped.get(name, 0) + 1
            return True
        raise TrainingDiverged(
            f"step {self.step + 1}: {what()} (not finite): the run diverged and nothing was written for this "
            f"step; the last checkpoint in {self._output_dir} is intact. Lower "
            "optimizer.learning_rate, or set training.on_nonfinite=skip to skip such steps"
        )


def check_finite(module: nn.Module, name: str, step: int) -> None:
    """Refuse to write weights that are not finite (a checkpoint or export must be usable)."""
    for key, value in module.state_dict().items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise TrainingDiverged(f"step {step}: {name}.{key} holds non-finite values: not writing it")
