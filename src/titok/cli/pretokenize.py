"""``titok pretokenize``: encode a dataset into token shards for generator training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from titok.cli.options import (
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    PresetOpt,
    parse_device,
    parse_dtype,
    resolve_model,
)


def pretokenize(
    data: Annotated[
        str, typer.Option("--data", "-d", help="Shards (brace pattern), ImageFolder tree, list or folder.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (resumed if it exists).")],
    model: ModelOpt = None,
    preset: PresetOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 64,
    shard_size: Annotated[int, typer.Option("--shard-size", min=1, help="Samples per output file.")] = 10_240,
    holdout: Annotated[int, typer.Option("--holdout", min=0, help="Samples held out (fixed seed).")] = 0,
    split: Annotated[str, typer.Option("--split", help="train or val (with --holdout).")] = "train",
    max_samples: Annotated[int | None, typer.Option("--max-samples", min=1)] = None,
    num_workers: Annotated[int, typer.Option("--num-workers", min=0)] = 0,
    no_flip: Annotated[
        bool, typer.Option("--no-flip", help="Do not store tokens of flipped images.")
    ] = False,
) -> None:
    """Encode a dataset into 1D token arrays with labels (and of the flipped images)."""
    from titok.data.loader import DataConfig
    from titok.pretokenize import pretokenize as run_pretokenize

    tok, desc = resolve_model(model, preset, parse_device(device))
    typer.echo(f"model: {desc}", err=True)
    cfg = DataConfig(
        path=data,
        batch_size=batch_size,
        holdout=holdout,
        split=split,
        max_samples=max_samples,
        num_workers=num_workers,
        fast_jpeg=False,
    )
    shard = max(batch_size, shard_size // batch_size * batch_size)
    out = run_pretokenize(
        tok,
        cfg,
        output,
        model_name=model or desc,
        shard_size=shard,
        flip=not no_flip,
        dtype=parse_dtype(dtype),
    )
    typer.echo(f"tokens written to {out}")
