"""Tokenizer training: recipes, the Accelerate engine, checkpoints, EMA and one task per mode.

Typical use (the ``titok train`` commands do the same)::

    from titok.training import load_recipe, make_task, train

    recipe = load_recipe("src/titok/recipes/tiny_stage1.yaml", ["training.max_train_steps=100"], mode="stage1")
    result = train(make_task(recipe), resume=False)
    result.export_dir        # loadable with TiTok.from_pretrained
"""

from titok.training.config import Recipe, load_recipe, recipe_from_dict
from titok.training.ema import EMA
from titok.training.engine import Engine, TrainResult, train
from titok.training.task import OptimizerSpec, StepContext, Task
from titok.training.tasks import TASKS, make_task

__all__ = [
    "EMA",
    "TASKS",
    "Engine",
    "OptimizerSpec",
    "Recipe",
    "StepContext",
    "Task",
    "TrainResult",
    "load_recipe",
    "make_task",
    "recipe_from_dict",
    "train",
]
