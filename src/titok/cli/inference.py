"""``titok tokenize`` and ``titok reconstruct``: images to tokens and back.

Images are read one by one: an unreadable file prints one error line and is skipped, the other
images are still processed, and the command exits with 1 at the end if any image failed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer
from tqdm import tqdm

from titok.cli.options import (
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    ForcePrefixOpt,
    ModelOpt,
    NumTokensOpt,
    PresetOpt,
    make_folder,
    parse_device,
    parse_dtype,
    remove_if_empty,
    resolve_model,
)
from titok.cli.progress import QuietOpt, progress_bar, say
from titok.errors import ImageError
from titok.images import list_images, open_image, pil_to_tensor, resize_center_crop, tensor_to_pil
from titok.metrics.image_quality import psnr
from titok.models.prefixes import powers_of_two

InputsArg = Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")]


def _load_batches(
    paths: Sequence[Path], size: int, batch_size: int, bar: tqdm
) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Yield (paths, images (B, 3, size, size)) of readable images; report unreadable ones."""
    done_paths: list[Path] = []
    done: list[torch.Tensor] = []
    for p in paths:
        try:
            img = open_image(p)
        except ImageError as exc:
            say(bar, f"error: {exc}", file=sys.stderr)
            bar.update(1)
            continue
        done_paths.append(p)
        done.append(pil_to_tensor(resize_center_crop(img, size)))
        if len(done) == batch_size:
            yield done_paths, torch.stack(done)
            done_paths, done = [], []
    if done:
        yield done_paths, torch.stack(done)


def tokenize(
    inputs: InputsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .npz file.")] = Path("tokens.npz"),
    model: ModelOpt = None,
    preset: PresetOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 16,
    num_tokens: NumTokensOpt = None,
    force_prefix: ForcePrefixOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode images into 1D token sequences and save them as .npz.

    The file holds ``tokens`` (N, k) int32 code ids (VQ models) or ``latents`` (N, k, C)
    float32 (VAE models), ``paths`` (N,) the source files, and ``model`` / ``image_size``;
    k is K, or ``--num-tokens``.
    """
    dev, dt = parse_device(device), parse_dtype(dtype)
    paths = list_images(inputs)
    tok, desc = resolve_model(model, preset, dev)
    if num_tokens is not None:
        tok.check_prefix(num_tokens, force_prefix)
    typer.echo(f"model: {desc}", err=True)
    kept: list[str] = []
    chunks: list[torch.Tensor] = []
    with progress_bar(len(paths), "tokenize", quiet) as bar:
        for batch_paths, images in _load_batches(paths, tok.config.image_size, batch_size, bar):
            chunks.append(
                tok.encode(
                    images, batch_size=batch_size, dtype=dt, num_tokens=num_tokens, force_prefix=force_prefix
                ).cpu()
            )
            kept.extend(str(p) for p in batch_paths)
            bar.update(len(batch_paths))
    if not chunks:
        raise ImageError("none of the input images could be read")
    out = torch.cat(chunks)
    key = "latents" if tok.is_vae else "tokens"
    array = out.float().numpy() if tok.is_vae else out.numpy().astype(np.int32)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        output, **{key: array}, paths=np.array(kept), model=np.array(desc), image_size=tok.config.image_size
    )
    typer.echo(f"wrote {len(kept)} token sequences of length {out.shape[1]} to {output}")
    if len(kept) < len(paths):
        raise typer.Exit(1)


def reconstruct(
    inputs: InputsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder.")] = Path("reconstructions"),
    model: ModelOpt = None,
    preset: PresetOpt = None,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
    batch_size: BatchOpt = 8,
    num_tokens: NumTokensOpt = None,
    force_prefix: ForcePrefixOpt = False,
    strip: Annotated[
        bool,
        typer.Option(
            "--strip",
            help="Also write NAME_strip.png: the original, then the reconstructions from 1, 2, 4, ..., K "
            "tokens (coarse to fine; models trained on prefixes).",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Encode and decode images; write original|reconstruction PNGs and print PSNR per image."""
    dev, dt = parse_device(device), parse_dtype(dtype)
    paths = list_images(inputs)
    tok, desc = resolve_model(model, preset, dev)
    if num_tokens is not None:
        tok.check_prefix(num_tokens, force_prefix)
    lengths = powers_of_two(tok.num_tokens) if strip and tok.config.variable_length else []
    if strip and not lengths:
        typer.echo("no strips: this model was not trained on token prefixes", err=True)
    typer.echo(f"model: {desc}", err=True)
    created = make_folder(output)
    done, scores = 0, []
    with progress_bar(len(paths), "reconstruct", quiet) as bar:
        for batch_paths, images in _load_batches(paths, tok.config.image_size, batch_size, bar):
            tokens = tok.encode(images, batch_size=batch_size, dtype=dt)
            k = num_tokens or tok.num_tokens
            recon = tok.decode(
                tokens[:, :k], batch_size=batch_size, dtype=dt, force_prefix=force_prefix
            ).cpu()
            steps = [tok.decode(tokens[:, :n], batch_size=batch_size, dtype=dt).cpu() for n in lengths]
            values = psnr(recon, images)
            for i, (p, orig, rec, value) in enumerate(zip(batch_paths, images, recon, values, strict=True)):
                pair = torch.cat([orig, rec], dim=2)
                name = output / f"{p.stem}_reconstruction.png"
                tensor_to_pil(pair).save(name)
                if steps:
                    tensor_to_pil(torch.cat([orig, *(s[i] for s in steps)], dim=2)).save(
                        output / f"{p.stem}_strip.png"
                    )
                if not quiet:
                    say(bar, f"{p}\tPSNR {float(value):.2f} dB\t-> {name}")
                scores.append(float(value))
            done += len(batch_paths)
            bar.update(len(batch_paths))
    if not scores:
        remove_if_empty(created)
        raise ImageError("none of the input images could be read")
    typer.echo(f"reconstructed {done} image(s) into {output}; mean PSNR {np.mean(scores):.2f} dB")
    if done < len(paths):
        raise typer.Exit(1)


__all__ = ["reconstruct", "tokenize"]
