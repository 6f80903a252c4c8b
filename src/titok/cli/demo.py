"""``titok demo``: the README's main command, run offline on the built-in default model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from titok.cli.inference import reconstruct
from titok.errors import DataError
from titok.samples import default_sample_data, extract_samples


def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("runs/demo"),
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Shard folder or image folder to take samples from "
            "(default: shared/data/imagenette beside the checkout, or $TITOK_SAMPLE_DATA).",
        ),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of sample images.")] = 8,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Tokenizer (default: built-in).")] = None,
) -> None:
    """Reconstruct sample images with the default model and write the results under OUTPUT."""
    source = data or default_sample_data()
    if source is None:
        raise DataError(
            "no sample images found: pass --data FOLDER (image files or WebDataset .tar shards) "
            "or set TITOK_SAMPLE_DATA"
        )
    inputs = extract_samples(source, output / "inputs", count)
    typer.echo(f"sample images: {len(inputs)} from {source}")
    reconstruct(inputs, output=output / "reconstructions", model=model)
