"""``titok train generator``: a class-conditional MaskGIT generator on pretokenized tokens.

::

    titok pretokenize --data /data/train --model runs/tok/export -o runs/tokens
    titok train generator --config tiny_generator data.train=runs/tokens [--resume] [--output-dir DIR]

``--config`` is a YAML file or a packaged recipe name (``tiny_generator``,
``generator_titok_l32``, ``generator_titok_b64``, ``generator_titok_s128``). Runs under
``torchrun`` / ``accelerate launch`` like the tokenizer modes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from titok.cli.recipes import resolve_recipe

if TYPE_CHECKING:
    from titok.training.engine import TrainResult

_CONFIG_HELP = "Recipe: a YAML file or a packaged recipe name (tiny_generator, generator_titok_l32, ...)."
_OVERRIDES_HELP = "Recipe overrides section.key=value, e.g. data.train=runs/tokens training.batch_size=64"
_RESUME_HELP = "Continue exactly from the latest checkpoint in the output folder (fresh start if none)."
_OUTPUT_HELP = "Run folder (overrides experiment.output_dir)."


def train_generator(
    config: str, overrides: list[str] | None = None, resume: bool = False, output_dir: Path | None = None
) -> TrainResult:
    """Load a ``generator`` recipe (file or packaged name) with overrides and train it.

    Prints where the run and the exported model are (on the main process) and returns the
    engine's :class:`~titok.training.engine.TrainResult`.
    """
    from titok.training.config import load_recipe
    from titok.training.tasks.generator import run_generator_training

    recipe = load_recipe(resolve_recipe(config), overrides or [], mode="generator")
    logging.basicConfig(
        level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    result = run_generator_training(recipe, resume=resume, output_dir=output_dir)
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"trained generator to step {result.step} in {result.output_dir}")
        if result.export_dir is not None:
            typer.echo(f"exported model: {result.export_dir}")
    return result


def generator(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help=_OUTPUT_HELP),
) -> None:
    """Train a class-conditional MaskGIT generator on tokens written by titok pretokenize."""
    train_generator(config, overrides, resume, output_dir)
