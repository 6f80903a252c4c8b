"""``titok train``: tokenizer training commands (one per mode), on Accelerate.

Each command takes a recipe and dotted overrides::

    titok train vqgan        --config tiny_vqgan.yaml data.train=/data/shards
    titok train stage1       --config titok_l32_stage1.yaml training.batch_size=64 --resume
    titok train stage2       --config titok_l32_stage2.yaml init_from=runs/l32-stage1/export
    titok train single-stage --config tiny_single_stage_vae.yaml --output-dir runs/vae

``--config`` is a YAML file or the name of a packaged recipe (``titok_l32_stage1``, ``tiny_vqgan``,
...). The same entry runs under ``torchrun --nproc_per_node N -m titok.cli_train ...`` and
``accelerate launch [--num_processes N] -m titok.cli_train ...`` for several processes or machines
(``titok.cli_train`` is this module under its documented name). ``titok train generator`` trains
the MaskGIT generator on tokens written by ``titok pretokenize``, through the same engine.
``titok train export RUN --step N`` exports a checkpoint of a run that stopped before its end
(``training.stop_at_step``), as the packaged decoder fine-tuning recipe does.

The training stack (Accelerate, WebDataset, TensorBoard: the ``train`` extra) is imported when a
command runs, so ``titok train --help`` works on a core install and a missing extra is one line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from titok.cli.options import DataOpt, DeviceOpt, HoldoutSeedOpt, WorkersOpt, parse_device
from titok.cli.recipes import recipes_dir, resolve_recipe
from titok.cli.run import run_app
from titok.errors import ConfigError

app = typer.Typer(
    name="train",
    help="Train TiTok tokenizers (and their VQGAN teacher) from a YAML recipe with dotted overrides.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_CONFIG_HELP = "Recipe: a YAML file or a packaged recipe name: " + ", ".join(
    sorted(p.stem for p in recipes_dir().glob("*.yaml"))
)
_OVERRIDES_HELP = (
    "Recipe overrides section.key=value, e.g. training.batch_size=64; your own images: data.train=FOLDER "
    "(images, an ImageFolder tree, tar shards or a list file)"
)
_RESUME_HELP = "Continue exactly from the latest checkpoint in the output folder (fresh start if none)."
_OUTPUT_HELP = "Run folder (overrides experiment.output_dir)."


def _configure_logging() -> None:
    main = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def run_mode(
    mode: str, config: str, overrides: list[str] | None, resume: bool, output_dir: Path | None
) -> None:
    """Load the recipe for ``mode`` and train it; prints where the results are."""
    from titok.training import load_recipe, make_task, train

    recipe = load_recipe(resolve_recipe(config), overrides or [], mode=mode)
    _configure_logging()
    result = train(make_task(recipe), resume=resume, output_dir=output_dir)
    if os.environ.get("RANK", "0") == "0":
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(result.skipped.items())) or "none"
        typer.echo(
            f"trained {mode} to step {result.step} in {result.output_dir} (skipped samples: {skipped})"
        )
        if result.export_dir is not None:
            typer.echo(f"exported model: {result.export_dir}")


@app.command("vqgan")
def vqgan(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help=_OUTPUT_HELP),
) -> None:
    """Train a 2D VQGAN teacher from scratch (for data or resolutions the published one does not fit)."""
    run_mode("vqgan", config, overrides, resume, output_dir)


@app.command("stage1")
def stage1(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help=_OUTPUT_HELP),
) -> None:
    """Stage 1: learn to predict the teacher VQGAN's codes (cross-entropy + quantizer loss)."""
    run_mode("stage1", config, overrides, resume, output_dir)


@app.command("stage2")
def stage2(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help=_OUTPUT_HELP),
) -> None:
    """Stage 2: frozen encoder and quantizer; decoder and pixel decoder trained to pixels with a GAN."""
    run_mode("stage2", config, overrides, resume, output_dir)


@app.command("single-stage")
def single_stage(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    overrides: list[str] | None = typer.Argument(None, help=_OVERRIDES_HELP),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help=_OUTPUT_HELP),
) -> None:
    """Single-stage baseline: TiTok trained straight to pixels from scratch (VQ or VAE tokens)."""
    run_mode("single_stage", config, overrides, resume, output_dir)


@app.command("generator")
def generator(
    config: str = typer.Option(..., "--config", "-c", help=_CONFIG_HELP),
    overrides: list[str] | None = typer.Argument(
        None, help="Recipe overrides section.key=value, e.g. data.train=runs/tokens training.batch_size=64"
    ),
    resume: bool = typer.Option(False, "--resume", help=_RESUME_HELP),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help=_OUTPUT_HELP),
) -> None:
    """Train a class-conditional MaskGIT generator on tokens written by titok pretokenize."""
    run_mode("generator", config, overrides, resume, output_dir)


@app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="A training run folder (holds recipe.yaml and checkpoints).")],
    step: Annotated[
        int | None, typer.Option("--step", min=1, help="Checkpoint step to export (default: the latest).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Export folder (default: RUN/export-STEP).")
    ] = None,
) -> None:
    """Export a run's checkpoint as a loadable model (for runs stopped at training.stop_at_step)."""
    from titok.training.export import export_run

    _configure_logging()
    typer.echo(f"exported model: {export_run(run, step, out)}")


def _parse_widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise ConfigError(f"--widths: expected positive integers separated by commas, got {text!r}")
    return widths


@app.command("classifier")
def train_classifier_command(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (the feature network).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Feature-network name (default: <data folder><size>-resnet).")
    ] = None,
    image_size: Annotated[int, typer.Option("--image-size", min=8, help="Training resolution.")] = 64,
    widths: Annotated[
        str, typer.Option("--widths", help="Channels per stage, comma-separated (features: the last).")
    ] = "32,64,128,256",
    holdout: Annotated[
        int, typer.Option("--holdout", min=0, help="Held-out validation images (0: none).")
    ] = 500,
    holdout_seed: HoldoutSeedOpt = 0,
    max_images: Annotated[
        int | None, typer.Option("--max-images", min=1, help="First N training images.")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 128,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak AdamW learning rate.")] = 2e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0)] = 0.05,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", min=0.0, max=0.99)] = 0.1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    num_workers: WorkersOpt = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a small classifier to serve as an offline FID/IS feature network (--feature-net OUT)."""
    from titok.evaluation.classifier_training import ClassifierTrainingConfig, train_classifier

    dev = parse_device(device)
    config = ClassifierTrainingConfig(
        data=data,
        name=name,
        image_size=image_size,
        widths=_parse_widths(widths),
        holdout=holdout,
        holdout_seed=holdout_seed,
        max_train_images=max_images,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        seed=seed,
        num_workers=num_workers,
    )
    result = train_classifier(
        config, out, device=dev, resume=resume, log=lambda line: typer.echo(line, err=True)
    )
    top1 = "n/a (no holdout)" if result.val_top1 is None else f"{result.val_top1:.4f}"
    typer.echo(f"saved {config.network_name()!r} to {out}; val top-1 {top1}")


def main(argv: list[str] | None = None) -> int:
    """Run the ``train`` app; a user error prints one line ``error: ...`` and returns 2."""
    return run_app(app, argv, prog_name="titok train")


__all__ = ["app", "main", "recipes_dir", "resolve_recipe", "run_mode", "train_classifier_command"]
