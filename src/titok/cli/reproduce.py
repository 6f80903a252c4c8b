"""``titok reproduce imagenette64``: the whole pipeline at small scale, with a report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from titok.errors import ConfigError

EXPERIMENTS = ("imagenette64",)


def reproduce(
    experiment: Annotated[str, typer.Argument(help="Experiment to run: imagenette64.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder (resumable).")] = Path(
        "runs/imagenette64"
    ),
    budget: Annotated[
        str,
        typer.Option("--budget", "-b", help="default (<= 2.5 h on 2 CPU cores), quick (<= 20 min) or tiny."),
    ] = "default",
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Imagenette train shards (default: $TITOK_DATA, else ../shared/data/imagenette).",
        ),
    ] = None,
    redo: Annotated[
        list[str] | None,
        typer.Option("--redo", help="Run this finished stage again from scratch (repeatable)."),
    ] = None,
    ship: Annotated[
        Path | None,
        typer.Option(
            "--ship", help="Afterwards copy the default tokenizer and its generator (float16) here."
        ),
    ] = None,
    latent_centering: Annotated[
        bool,
        typer.Option(
            "--latent-centering",
            help="Train the two-stage TiTok stages with latent centering (recorded in the run).",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-j",
            min=0,
            help="Processes for the independent training stages, sharing the CPU cores (0: 2 on a "
            "machine with 2 or more cores, else 1).",
        ),
    ] = 0,
) -> None:
    """Train every tokenizer, generator and the feature network; measure; write report.md."""
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {experiment!r}; available: {', '.join(EXPERIMENTS)}")
    from titok.reproduce import get_budget, reproduce_imagenette64
    from titok.reproduce.ship import ship_models

    if workers == 0:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 1
    report = reproduce_imagenette64(
        output,
        get_budget(budget),
        data,
        echo=typer.echo,
        redo=redo,
        latent_centering=latent_centering,
        workers=workers,
    )
    typer.echo(f"report: {report}")
    if ship is not None:
        for path in ship_models(output, ship):
            typer.echo(f"shipped: {path}")
