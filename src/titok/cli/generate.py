"""``titok generate``: class-conditional images from a generator and its tokenizer.

The generator is ``--generator`` (default: the built-in ``imagenette64``); the tokenizer that
decodes its tokens is ``--model`` as in every other command, else the one the generator's config
names (a relative path is also looked up beside the generator folder), else the tokenizer preset
of the same name (``titok-l32`` decodes ``titok-l32``). Classes are ids or names from the
generator's own class list (``class_names`` of its config; ImageNet-1k's for 1000-class models
without one).

The old spellings still work for one release, with a warning: ``--model`` naming a generator
(when ``--generator`` is not given) and ``--tokenizer`` for the tokenizer.
Output: one PNG per image, ``<label>_<class>_<i>.png``, and ``grid.png`` with one row per class, each labelled with its class name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import torch
import typer
from PIL import Image, ImageDraw, ImageFont

from titok.class_names import IMAGENETTE_CLASSES, resolve_class
from titok.cli.options import (
    DeviceOpt,
    DtypeOpt,
    ForcePrefixOpt,
    parse_device,
    parse_dtype,
    removed_on_failure,
)
from titok.cli.progress import QuietOpt, progress_bar
from titok.errors import TitokError
from titok.images import tensor_to_pil
from titok.loading import load_tokenizer, names_generator
from titok.models.generator import Generator
from titok.models.presets import tokenizer_presets
from titok.resources import builtin_generators_dir

DEFAULT_GENERATOR = "imagenette64"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.split(",")[0].lower()).strip("-") or "class"


def make_grid(images: torch.Tensor, rows: int) -> torch.Tensor:
    """Images (N, 3, H, W) -> one grid image (3, rows*H, cols*W), row-major, black padding."""
    n, c, h, w = images.shape
    cols = -(-n // rows)
    grid = torch.zeros(c, rows * h, cols * w)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        grid[:, r * h : (r + 1) * h, col * w : (col + 1) * w] = img
    return grid


def labelled_grid(images: torch.Tensor, labels: list[str]) -> Image.Image:
    """Images (N, 3, H, W), row-major with one row per entry of ``labels`` -> the grid of
    :func:`make_grid` with each row's label written in a white margin on its left."""
    grid = tensor_to_pil(make_grid(images, rows=len(labels)))
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), label, font=font) for label in labels]
    margin = max(box[2] for box in boxes) + 8
    canvas = Image.new("RGB", (grid.width + margin, grid.height), "white")
    canvas.paste(grid, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = grid.height // len(labels)
    for row, (label, box) in enumerate(zip(labels, boxes, strict=True)):
        top = row * row_height + (row_height - (box[3] - box[1])) // 2 - box[1]
        draw.text((4, top), label, fill="black", font=font)
    return canvas


def class_list_of(generator: Generator) -> list[str]:
    """The generator's own class names if it has them, else ImageNet-1k's (1000 classes)."""
    return generator.class_list()


def check_sampling_options(steps: int | None, guidance: float | None, temperature: float | None) -> None:
    """Refuse impossible sampling options before any model is loaded."""
    if steps is not None and steps < 1:
        raise TitokError(f"--num-steps must be >= 1, got {steps}")
    if guidance is not None and not guidance >= 0:
        raise TitokError(f"--guidance-scale must be >= 0 (0: the plain conditional model), got {guidance}")
    if temperature is not None and not temperature >= 0:
        raise TitokError(f"--temperature must be >= 0, got {temperature}")


def generate_models(
    generator: str | None, model: str | None, tokenizer: str | None
) -> tuple[str | None, str | None, list[str]]:
    """The generator and tokenizer specs that ``--generator``, ``--model`` and the old
    ``--tokenizer`` ask for, and a warning per old spelling used (see the module docstring)."""
    warnings = []
    if tokenizer is not None:
        if model is not None and generator is None:
            warnings.append(
                f"--model {model} --tokenizer {tokenizer} is the old spelling of --generator {model} --model {tokenizer}"
            )
            return model, tokenizer, warnings
        if model is not None:
            raise TitokError("--tokenizer is the old spelling of --model: pass one of them")
        warnings.append("--tokenizer is the old spelling of --model (the tokenizer, as in every command)")
        return generator, tokenizer, warnings
    if generator is None and model is not None and names_generator(model):
        warnings.append(
            f"--model {model} names a generator: that is the old spelling of --generator {model} "
            "(--model is the tokenizer, as in every command)"
        )
        return model, None, warnings
    return generator, model, warnings


def tokenizer_spec(generator_spec: str, generator: Generator, tokenizer: str | None) -> str:
    """The tokenizer to decode with (see the module docstring for the order)."""
    spec = tokenizer or generator.config.tokenizer
    if spec is None:
        if generator_spec in tokenizer_presets():
            return generator_spec
        raise TitokError(f"{generator_spec}: does not name its tokenizer; pass --model (the tokenizer)")
    beside = Path(generator_spec) / spec
    if tokenizer is None and not Path(spec).exists() and Path(generator_spec).is_dir() and beside.exists():
        return str(beside)
    return spec


def generate(
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            "-c",
            help="Class id or name (repeatable); default: every class of a small model. The built-in "
            f"imagenette64 generator's: {', '.join(IMAGENETTE_CLASSES)}.",
        ),
    ] = None,
    num: Annotated[int, typer.Option("-n", "--num", min=1, help="Images per class.")] = 4,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("generated"),
    generator: Annotated[
        str | None,
        typer.Option(
            "--generator", "-g", help="Generator: preset, hub id or folder (default: the built-in one)."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Tokenizer to decode with (default: the generator's).")
    ] = None,
    tokenizer: Annotated[str | None, typer.Option("--tokenizer", hidden=True, help="Old --model.")] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            "--num-steps",
            "--steps",
            help="Decoding steps (default: the model's; --steps is the old spelling).",
        ),
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            "--guidance-scale",
            "--guidance",
            help="Classifier-free guidance scale (--guidance is the old spelling).",
        ),
    ] = None,
    guidance_schedule: Annotated[
        str | None, typer.Option("--guidance-schedule", help="constant, linear or power-cosine.")
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="Randomize temperature.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same images).")] = 0,
    unconditional: Annotated[
        bool,
        typer.Option(
            "--unconditional", help="Sample the unconditional ('no class') model: -n images, no --class."
        ),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 16,
    num_tokens: Annotated[
        int | None,
        typer.Option(
            "--num-tokens",
            "-k",
            min=1,
            help="Generate the first k tokens only and decode them (a tokenizer trained on prefixes; "
            "faster with a generator trained on prefixes). Default: all K.",
        ),
    ] = None,
    force_prefix: ForcePrefixOpt = False,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    quiet: QuietOpt = False,
) -> None:
    """Generate images per class; write PNGs and a grid (one row per class).

    Guidance 0 samples the plain conditional model; larger values push samples away from the
    unconditional ("no class") model (classifier-free guidance, as published).
    """
    check_sampling_options(steps, guidance, temperature)
    if unconditional and classes:
        raise TitokError("--unconditional samples without a class: drop --class")
    dev, dt = parse_device(device), parse_dtype(dtype)
    generator, model, warnings = generate_models(generator, model, tokenizer)
    for warning in warnings:
        typer.echo(f"warning: {warning}", err=True)
    spec = generator or DEFAULT_GENERATOR
    if generator is None and not (builtin_generators_dir() / DEFAULT_GENERATOR).is_dir():
        raise TitokError("no built-in generator is installed: pass --generator (e.g. titok-l32)")
    gen = Generator.from_pretrained(spec).to(dev)
    gen.config.sampling_settings(
        num_steps=steps,
        guidance_scale=guidance,
        guidance_schedule=guidance_schedule,
        randomize_temperature=temperature,
    )  # a bad --guidance-schedule fails here, before the tokenizer is loaded
    names = class_list_of(gen)
    labels: list[int | None]
    if unconditional:
        labels = [None]
    elif classes:
        labels = [resolve_class(c, names) for c in classes]
    elif len(names) <= 100:
        labels = list(range(len(names)))
    else:
        raise TitokError(f"pass --class (this model has {len(names)} classes)")
    tok_spec = tokenizer_spec(spec, gen, model)
    tok = load_tokenizer(tok_spec).to(dev)
    if tok.config.codebook_size != gen.config.codebook_size or tok.num_tokens != gen.config.seq_len:
        raise TitokError(
            f"tokenizer {tok_spec} ({tok.num_tokens} tokens, {tok.config.codebook_size} codes) does not fit "
            f"generator {spec} ({gen.config.seq_len} tokens, {gen.config.codebook_size} codes)"
        )
    if num_tokens is not None:
        tok.check_prefix(num_tokens, force_prefix)
    with removed_on_failure(output):
        output.mkdir(parents=True, exist_ok=True)
        all_labels: list[int | None] = [y for y in labels for _ in range(num)]
        rng = torch.Generator(device=dev)
        rng.manual_seed(seed)
        images = []
        with progress_bar(len(all_labels), "generate", quiet) as bar:
            for start in range(0, len(all_labels), batch_size):
                chunk = all_labels[start : start + batch_size]
                tokens = gen.generate(
                    None if unconditional else chunk,
                    num_steps=steps,
                    guidance_scale=guidance,
                    guidance_schedule=guidance_schedule,
                    randomize_temperature=temperature,
                    generator=rng,
                    num_samples=len(chunk) if unconditional else None,
                    dtype=dt,
                    num_tokens=num_tokens,
                )
                images.append(tok.decode(tokens, dtype=dt, force_prefix=force_prefix).cpu())
                bar.update(len(chunk))
        images_t = torch.cat(images)
        for i, (label, img) in enumerate(zip(all_labels, images_t, strict=True)):
            stem = "unconditional" if label is None else f"{label:04d}_{_slug(names[label])}"
            tensor_to_pil(img).save(output / f"{stem}_{i % num:03d}.png")
        row_labels = ["unconditional" if y is None else names[y].split(",")[0] for y in labels]
        labelled_grid(images_t, row_labels).save(output / "grid.png")
    typer.echo(f"wrote {len(all_labels)} images and grid.png ({len(labels)} rows) to {output}")
