"""Ship a reproduction's default tokenizer and generator as the package's built-in models.

The tokenizer (the K chosen for the generator, or its decoder-fine-tuned copy) goes to ``<dest>/models/imagenette64`` and its
generator to ``<dest>/generators/imagenette64`` in the ``save_pretrained`` format, with weights
stored in float16 (loading casts them back to float32), and with a ``source.json`` naming the run
and its reconstruction figures on the held-out images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from titok.errors import ConfigError
from titok.reproduce.stages import TokenizerStage

NAME = "imagenette64"


def _halve(folder: Path) -> None:
    for weights in folder.glob("*.safetensors"):
        tensors = load_file(weights)
        half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(half, weights)


def ship_pair(
    tokenizer_dir: str | Path,
    generator_dir: str | Path,
    dest: str | Path,
    name: str,
    source: dict,
) -> list[Path]:
    """Ship a tokenizer export and a generator export as the built-in models ``name`` (float16
    weights, the generator naming its tokenizer by ``name``, ``source.json`` beside each)."""
    from titok.models.generator import Generator
    from titok.models.titok import TiTok

    dest = Path(dest)
    tok_dir, gen_dir = dest / "models" / name, dest / "generators" / name
    TiTok.from_pretrained(tokenizer_dir).save_pretrained(tok_dir)
    generator = Generator.from_pretrained(generator_dir)
    generator.config.tokenizer = name
    generator.save_pretrained(gen_dir)
    for folder in (tok_dir, gen_dir):
        _halve(folder)
        (folder / "source.json").write_text(
            json.dumps({**source, "weights_dtype": str(torch.float16)}, indent=2) + "\n"
        )
    return [tok_dir, gen_dir]


def ship_models(run_dir: str | Path, dest: str | Path, tokenizer: TokenizerStage | None = None) -> list[Path]:
    """Copy the run's default tokenizer and 1D generator into ``dest`` (the package assets folder).

    ``tokenizer``: the one to ship (default: the one the generator's tokens were made with); it must
    read the same tokens, i.e. be that one or a decoder-fine-tuned copy of it.

    Raises:
        ConfigError: ``tokenizer`` reads other tokens than the generator's.
    """
    from titok.models.generator import Generator
    from titok.models.titok import TiTok

    run = Path(run_dir)
    state = json.loads((run / "state.json").read_text())
    tokens_name = state["stages"]["tokens-1d"]["tokenizer"]
    if tokenizer is not None and tokenizer.base.name != tokens_name:
        raise ConfigError(
            f"{run}: the generator reads the tokens of {tokens_name}; {tokenizer.name} makes other tokens"
        )
    tokenizer_name = tokens_name if tokenizer is None else tokenizer.name
    recon = json.loads((run / "results" / "reconstruction.json").read_text())[tokenizer_name]
    dest = Path(dest)
    tok_dir, gen_dir = dest / "models" / NAME, dest / "generators" / NAME
    tokenizer_model = TiTok.from_pretrained(TokenizerStage.from_name(tokenizer_name).export_dir(run))
    tokenizer_model.save_pretrained(tok_dir)
    generator = Generator.from_pretrained(run / "generator-1d" / "export")
    generator.config.tokenizer = NAME
    generator.save_pretrained(gen_dir)
    for folder in (tok_dir, gen_dir):
        _halve(folder)
    source = {
        "run": str(run),
        "budget": state["budget"]["name"],
        "tokenizer": tokenizer_name,
        "heldout_psnr_float32": recon["PSNR"],
        "heldout_ssim_float32": recon["SSIM"],
        "num_heldout_images": recon["num_images"],
        "weights_dtype": str(torch.float16),
    }
    for folder in (tok_dir, gen_dir):
        (folder / "source.json").write_text(json.dumps(source, indent=2) + "\n")
    return [tok_dir, gen_dir]
