"""The training modes: one :class:`~titok.training.task.Task` per recipe ``mode``."""

from __future__ import annotations

from titok.errors import ConfigError
from titok.training.config import Recipe
from titok.training.task import Task
from titok.training.tasks.generator import GeneratorTask
from titok.training.tasks.single_stage import SingleStageTask
from titok.training.tasks.stage1 import Stage1Task
from titok.training.tasks.stage2 import Stage2Task
from titok.training.tasks.vqgan import VQGANTask

TASKS: dict[str, type[Task]] = {
    "vqgan": VQGANTask,
    "stage1": Stage1Task,
    "stage2": Stage2Task,
    "single_stage": SingleStageTask,
    "generator": GeneratorTask,
}


def make_task(recipe: Recipe) -> Task:
    """The task that trains ``recipe.mode``."""
    try:
        return TASKS[recipe.mode](recipe)
    except KeyError:
        raise ConfigError(f"{recipe.source}: no training mode {recipe.mode!r} ({', '.join(TASKS)})") from None


__all__ = ["TASKS", "GeneratorTask", "SingleStageTask", "Stage1Task", "Stage2Task", "VQGANTask", "make_task"]
