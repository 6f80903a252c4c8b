"""Export a checkpoint of a training run as a loadable model, without training.

A run stopped on purpose before ``max_train_steps`` (``training.stop_at_step``, e.g. the packaged
decoder fine-tuning recipe, whose shipped decoder is step 1000 of its schedule) writes checkpoints
but no export; ``titok train export RUN --step N`` writes one::

    from titok.training.export import export_run
    export_run("runs/imagenette64-finetune", step=1000)  # -> runs/imagenette64-finetune/export-1000
"""

from __future__ import annotations

from pathlib import Path

from titok.errors import ConfigError
from titok.training.config import load_recipe
from titok.training.engine import Engine
from titok.training.tasks import make_task


def export_run(run_dir: str | Path, step: int | None = None, directory: str | Path | None = None) -> Path:
    """Export checkpoint ``step`` (None: the latest) of the training run in ``run_dir``.

    The run's own ``recipe.yaml`` (written when it started) rebuilds the task, so the export is
    the same one the run would have written had it ended at that step.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "recipe.yaml"
    if not saved.is_file():
        raise ConfigError(f"{run_dir}: not a training run folder (no recipe.yaml)")
    return Engine(make_task(load_recipe(saved)), output_dir=run_dir).export_checkpoint(step, directory)
