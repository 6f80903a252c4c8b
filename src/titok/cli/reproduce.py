"""``titok reproduce imagenette64``: the whole pipeline at small scale, with a report."""

from __future__ import annotations

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
        typer.Option("--budget", "-b", help="default (<= 2 h on 2 CPU cores), quick (<= 20 min) or tiny."),
    ] = "default",
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Imagenette train shards (default: ../shared/data/imagenette)."),
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
            help="Train the TiTok stages with latent centering (not the authors' recipe; recorded in the run).",
        ),
    ] = False,
) -> None:
    """Train every tokenizer, generator and the feature network; measure; write report.md."""
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {experiment!r}; available: {', '.join(EXPERIMENTS)}")
    from titok.reproduce import get_budget, reproduce_imagenette64
    from titok.reproduce.ship import ship_models

    report = reproduce_imagenette64(
        output, get_budget(budget), data, echo=typer.echo, redo=redo, latent_centering=latent_centering
    )
    typer.echo(f"report: {report}")
    if ship is not None:
        for path in ship_models(output, ship):
            typer.echo(f"shipped: {path}")
