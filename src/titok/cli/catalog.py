"""``titok presets`` and ``titok info``: what models exist and what a checkpoint holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import torch
import typer

from titok.cli.options import PresetOpt
from titok.loading import load_tokenizer
from titok.models.presets import tokenizer_presets
from titok.models.titok import TiTok


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def presets(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the built-in models (shipped, offline) and the tokenizer presets: tokens, codebook,
    parameters and published weights."""
    from titok.loading import builtin_model_names, config_from_json
    from titok.resources import builtin_models_dir

    rows = []
    for name in builtin_model_names():
        cfg = config_from_json(builtin_models_dir() / name / "config.json")
        with torch.device("meta"):
            n = _count(TiTok(cfg))
        rows.append(
            {
                "name": name,
                "image_size": cfg.image_size,
                "tokens": cfg.num_latent_tokens,
                "codebook": str(cfg.codebook_size),
                "parameters": n,
                "weights": "built in (offline)",
            }
        )
    for name, p in tokenizer_presets().items():
        cfg = p.build_config()
        with torch.device("meta"):
            n = _count(TiTok(cfg))
        codebook = "VAE c" + str(cfg.token_size) if cfg.quantize_mode == "vae" else str(cfg.codebook_size)
        rows.append(
            {
                "name": name,
                "image_size": cfg.image_size,
                "tokens": cfg.num_latent_tokens,
                "codebook": codebook,
                "parameters": n,
                "weights": p.hub_repo or "-",
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    header = f"{'name':<20} {'size':>4} {'tokens':>6} {'codebook':>9} {'params':>8}  weights"
    typer.echo(header)
    typer.echo("-" * len(header))
    for r in rows:
        typer.echo(
            f"{r['name']:<20} {r['image_size']:>4} {r['tokens']:>6} {r['codebook']:>9} "
            f"{_millions(r['parameters']):>8}  {r['weights']}"
        )


def info(
    checkpoint: Annotated[str, typer.Argument(help="Preset, hub repo id, folder or weights file.")],
    preset: PresetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe a tokenizer checkpoint: its config and parameter counts per part."""
    model = load_tokenizer(checkpoint, preset=preset)
    parts = {name: _count(child) for name, child in model.named_children()}
    parts["latent_tokens"] = model.latent_tokens.numel()
    out = {
        "source": checkpoint if not Path(checkpoint).exists() else str(Path(checkpoint).resolve()),
        "parameters": _count(model),
        "parameters_by_part": parts,
        "config": model.config.to_dict(),
    }
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    c = model.config
    typer.echo(f"source:      {out['source']}")
    typer.echo(
        f"parameters:  {_millions(out['parameters'])} "
        + ", ".join(f"{k} {_millions(v)}" for k, v in parts.items())
    )
    typer.echo(f"image:       {c.image_size}px, patch {c.patch_size}, {c.num_latent_tokens} tokens")
    if c.quantize_mode == "vae":
        typer.echo(f"latents:     VAE, {c.token_size} channels per token")
    else:
        typer.echo(f"codebook:    {c.codebook_size} x {c.token_size} (l2-normalised: {c.use_l2_norm})")
    typer.echo(f"encoder:     width {c.encoder_width}, depth {c.encoder_depth}, heads {c.encoder_heads}")
    typer.echo(
        f"decoder:     width {c.decoder_width}, depth {c.decoder_depth}, heads {c.decoder_heads}, "
        f"head {c.decoder_head}"
    )
