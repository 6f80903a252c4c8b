"""``titok demo``: the README's main command, run offline on the built-in default models.

Reconstructs sample images with the default tokenizer (and, for a tokenizer trained on token
prefixes, writes a coarse-to-fine strip per image: the reconstructions from 1, 2, 4, ..., K
tokens) and, when the built-in generator is
installed, generates a grid with one row per class. A demo that fails removes the output folder
it created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from titok.cli.generate import generate
from titok.cli.inference import reconstruct
from titok.cli.options import DeviceOpt, NumTokensOpt, removed_on_failure
from titok.cli.progress import QuietOpt
from titok.resources import builtin_generators_dir, builtin_models_dir
from titok.samples import default_sample_data, extract_samples

#: The built-in tokenizer trained on token prefixes, whose strips the demo also writes.
FLEX_MODEL = "imagenette64-flex"


def builtin_generator_installed() -> bool:
    return (builtin_generators_dir() / "imagenette64").is_dir()


def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("runs/demo"),
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Shard folder or image folder to take samples from "
            "(default: $TITOK_SAMPLE_DATA, else the sample photographs bundled with titok).",
        ),
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Number of sample images.")] = 8,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Tokenizer (default: built-in).")] = None,
    per_class: Annotated[
        int, typer.Option("--per-class", min=0, help="Generated images per class (0: no generation).")
    ] = 4,
    num_tokens: NumTokensOpt = None,
    device: DeviceOpt = "cpu",
    quiet: QuietOpt = False,
) -> None:
    """Reconstruct sample images with the default model and write the results under OUTPUT."""
    with removed_on_failure(output):
        _demo(output, data, count, model, per_class, num_tokens, device, quiet)


def _demo(
    output: Path,
    data: Path | None,
    count: int,
    model: str | None,
    per_class: int,
    num_tokens: int | None,
    device: str,
    quiet: bool,
) -> None:
    source = data or default_sample_data()
    inputs = extract_samples(source, output / "inputs", count)
    typer.echo(f"sample images: {len(inputs)} from {source}")
    # A model trained on token prefixes also gets a coarse-to-fine strip per image.
    reconstruct(
        inputs,
        output=output / "reconstructions",
        model=model,
        num_tokens=num_tokens,
        strip=True,
        device=device,
        quiet=quiet,
    )
    flex = builtin_models_dir() / FLEX_MODEL
    if model is None and flex.is_dir():
        # The built-in model trained on token prefixes: the same images from 1, 2, 4, ..., 32 tokens.
        typer.echo(
            f"coarse-to-fine strips with {FLEX_MODEL} (the first k of its tokens, k = 1, 2, 4, ..., 32):"
        )
        reconstruct(inputs, output=output / "strips", model=FLEX_MODEL, strip=True, device=device, quiet=True)
    if per_class == 0:
        return
    if model is not None or not builtin_generator_installed():
        typer.echo("generation skipped: the built-in generator is not installed (or --model was given)")
        return
    generate(
        classes=None,
        num=per_class,
        output=output / "generated",
        model=None,
        tokenizer=None,
        num_tokens=num_tokens,
        device=device,
        quiet=quiet,
    )
