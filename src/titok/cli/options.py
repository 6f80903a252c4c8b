"""Options shared by several commands, and how they become objects."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer

from titok.errors import TitokError
from titok.loading import load_tokenizer
from titok.loading.lookup import read_config_json
from titok.models.presets import get_preset, tokenizer_presets
from titok.models.titok import TiTok
from titok.resources import builtin_models_dir

if TYPE_CHECKING:
    from titok.evaluation.reconstruction import Tokenizer
    from titok.models.generator import Generator
    from titok.models.vqgan import VQGAN

log = logging.getLogger("titok")

#: The model used when ``--model`` is not given: the shipped Imagenette model once it exists.
DEFAULT_MODEL = "imagenette64"
FALLBACK_MODEL = "titok-tiny-64"

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Preset name, hub repo id, local folder or weights file."),
]
PresetOpt = Annotated[
    str | None, typer.Option("--preset", help="Architecture of a bare weights file (e.g. titok-l32).")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or bfloat16 (autocast).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]
NumTokensOpt = Annotated[
    int | None,
    typer.Option(
        "--num-tokens",
        "-k",
        min=1,
        help="Use the first k tokens only (a model trained on prefixes; default: all K).",
    ),
]
ForcePrefixOpt = Annotated[
    bool,
    typer.Option("--force-prefix", help="Allow --num-tokens below K for a model not trained on prefixes."),
]

DataOpt = Annotated[
    str, typer.Option("--data", "-d", help="Data spec: tar shards, shard folder, image folder, list.")
]
HoldoutSeedOpt = Annotated[int, typer.Option("--holdout-seed", help="Seed of the holdout choice.")]
WorkersOpt = Annotated[int, typer.Option("--num-workers", min=0, help="Data loading worker processes.")]
TeacherOpt = Annotated[
    str | None, typer.Option("--teacher", help="VQGAN decoding a stage-1 model ('maskgit-vqgan' or a path).")
]
JsonOutOpt = Annotated[Path | None, typer.Option("--json-out", help="Also write the results as JSON here.")]
GeneratorOpt = Annotated[
    str | None, typer.Option("--generator", "-g", help="Generator: preset, folder, file.")
]
GeneratorPresetOpt = Annotated[
    str | None, typer.Option("--generator-preset", help="Architecture of a bare generator weights file.")
]
NumStepsOpt = Annotated[
    int | None, typer.Option("--num-steps", min=1, help="Sampling steps (default: model's).")
]
GuidanceOpt = Annotated[
    float | None, typer.Option("--guidance-scale", min=0.0, help="CFG scale (default: model's).")
]


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise TitokError(f"--dtype: expected float32 or bfloat16, got {name!r}") from None


def parse_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TitokError(f"--device: not a device name: {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TitokError("--device: CUDA was asked for but is not available on this machine")
    return device


def resolve_model(spec: str | None, preset: str | None, device: torch.device) -> tuple[TiTok, str]:
    """Load the tokenizer named by ``spec``; returns it with a line describing what was loaded.

    A preset without published weights (the tiny ones) is built freshly initialised with a fixed
    seed, and the description says so plainly.
    """
    if spec is None:
        spec = DEFAULT_MODEL if (builtin_models_dir() / DEFAULT_MODEL).is_dir() else FALLBACK_MODEL
    if spec in tokenizer_presets() and get_preset(spec).hub_repo is None:
        torch.manual_seed(0)
        model = TiTok.from_preset(spec).eval()
        note = f"{spec} (freshly initialised, untrained: reconstructions are not meaningful)"
    else:
        model = load_tokenizer(spec, preset=preset)
        note = spec
    return model.to(device), note


def vqgan_export(spec: str | None) -> Path | None:
    """``spec`` as a folder written by ``titok train vqgan`` (its ``config.json`` says "vqgan"), else None."""
    config = Path(spec) / "config.json" if spec is not None else None
    if config is None or not config.is_file():
        return None
    return config.parent if read_config_json(config).get("kind") == "vqgan" else None


def resolve_reconstruction_model(
    spec: str | None, preset: str | None, device: torch.device, image_size: int | None
) -> tuple[Tokenizer, str]:
    """The tokenizer of ``titok eval reconstruction``: a TiTok (:func:`resolve_model`), or a 2D
    VQGAN export seen as a :class:`~titok.models.grid_tokenizer.GridTokenizer` of its
    (image_size / f)^2 grid tokens. A VQGAN export records no resolution, so it needs
    ``image_size``; a TiTok has its own, which ``image_size`` may only repeat."""
    folder = vqgan_export(spec)
    if folder is not None:
        from titok.models.grid_tokenizer import GridTokenizer

        if image_size is None:
            raise TitokError(
                f"{folder}: a 2D VQGAN export records no image size: give --image-size "
                "(the resolution it was trained at, e.g. 64)"
            )
        grid = GridTokenizer.from_pretrained(folder, image_size).to(device).eval()
        return grid, f"{folder} (2D VQGAN, {grid.num_tokens} grid tokens at {image_size} px)"
    model, note = resolve_model(spec, preset, device)
    if image_size is not None and image_size != model.image_size:
        raise TitokError(
            f"--image-size {image_size}: the tokenizer {note} works at {model.image_size} px "
            "(--image-size is for 2D VQGAN exports)"
        )
    return model, note


def load_teacher(spec: str | None, device: torch.device) -> VQGAN | None:
    """The VQGAN of ``--teacher`` (eval mode, on ``device``), or None when it is not given."""
    if spec is None:
        return None
    from titok.loading import load_vqgan

    return load_vqgan(spec).to(device).eval()


def sampling_settings(num_steps: int | None, guidance_scale: float | None) -> dict[str, Any]:
    """``--num-steps``/``--guidance-scale`` as sampling keyword arguments (unset ones left out: the
    generator's own defaults apply)."""
    settings: dict[str, Any] = {}
    if num_steps is not None:
        settings["num_steps"] = num_steps
    if guidance_scale is not None:
        settings["guidance_scale"] = guidance_scale
    return settings


def resolve_generator(
    spec: str, preset: str | None, tokenizer: TiTok, device: torch.device
) -> tuple[Generator, str]:
    """Load the generator named by ``spec``; returns it (eval mode, on ``device``) and a description.

    A preset without published weights is built freshly initialised (seed 0) with the tokenizer's
    codebook size and token count, which is only meaningful for throughput measurements.
    """
    from titok.models.generator import Generator, generator_presets, get_generator_preset

    if spec in generator_presets() and get_generator_preset(spec).hub_repo is None:
        torch.manual_seed(0)
        generator = Generator.from_preset(
            spec, codebook_size=tokenizer.config.codebook_size, seq_len=tokenizer.num_tokens
        )
        note = f"{spec} (freshly initialised, untrained: samples are noise)"
    else:
        generator = Generator.from_pretrained(spec, preset=preset)
        note = spec
    return generator.to(device).eval(), note


def write_json(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` as indented JSON to ``path`` (parents created): every ``--json-out``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    return [p for p in (path, *path.parents) if not p.exists()]


def make_folder(path: Path) -> list[Path]:
    """Create ``path`` and its missing parents; returns the folders created, deepest first (for
    :func:`remove_if_empty` when the command then fails)."""
    created = _missing_folders(path)
    path.mkdir(parents=True, exist_ok=True)
    return created


@contextlib.contextmanager
def removed_on_failure(path: Path) -> Iterator[None]:
    """Run the block; if it fails and ``path`` did not exist before it, remove ``path`` (and the
    parents it lacked) with all that the block wrote there: a failed command leaves no
    half-written output folder."""
    missing = _missing_folders(path)
    try:
        yield
    except BaseException:
        if missing and missing[-1].is_dir():  # the outermost folder the block created
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise


def remove_if_empty(created: list[Path]) -> None:
    """Remove the folders :func:`make_folder` created that are still empty (a failed command
    leaves no empty output folder)."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return
