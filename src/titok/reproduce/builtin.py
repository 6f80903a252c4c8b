"""The run that makes the built-in ``imagenette64`` models: one TiTok, its controls, its generator.

Stages, each recorded in ``<run>/state.json`` with its wall time and skipped when done:

* ``classifier``: the feature network of rFID/gFID/IS and of the class-assignment check;
* ``titok-k32-single``: the tokenizer, recipe ``imagenette64_titok`` (TiTok straight to pixels,
  latent centering and dead-code restarts);
* ``vqgan-f8``: the 2D control, a VQGAN with 8 x 8 = 64 tokens trained with the same L2 loss (no GAN),
  for ``control_steps`` steps at the same batch (its checkpoints give the comparison at equal
  numbers of training images);
* ``eval-reconstruction``, ``eval-probe``: PSNR, SSIM, rFID, codebook use and linear probes on
  the 500 held-out images, for both tokenizers;
* ``tokens-1d``, ``generator-1d``: the MaskGIT generator on the TiTok's tokens of the train split;
* ``eval-generation``: gFID/IS and the share of samples that the classifier assigns to the
  requested class (and the same share for real held-out images).

Usage::

    python -m titok.reproduce.builtin -o runs/imagenette64-builtin [--stages classifier ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from titok.errors import ConfigError, TitokError
from titok.reproduce.budget import IMAGE_SIZE, Budget
from titok.reproduce.pipeline import (
    stage_classifier,
    stage_eval_generation,
    stage_eval_probe,
    stage_eval_reconstruction,
    stage_generator,
    stage_tokens,
    train_stage,
)
from titok.reproduce.recipes import RECIPES, VQGAN_MODEL, VQGAN_MULT, data_split
from titok.reproduce.render import (
    feature_network,
    find_key,
    image,
    sampling_text,
    section,
    table,
    write_markdown,
)
from titok.reproduce.run_folder import Run, default_data
from titok.reproduce.stages import TEACHER, TokenizerStage
from titok.training.config import Recipe, load_recipe

#: The tokenizer of the built-in models.
TOKENIZER = TokenizerStage.single_stage(32)
#: Its 2D control: the f=8 VQGAN (64 tokens).
CONTROL = TEACHER

#: Steps and sizes of the built-in run (tokenizer steps are the recipe's).
BUILTIN = Budget(
    name="builtin",
    token_counts=(32,),
    batch_size=32,
    tokenizer_steps=6000,
    stage1_steps=1,
    generator_steps=3000,
    generator_batch=64,
    classifier_epochs=4,
    generated_images=500,
)
STAGES = (
    "classifier",
    TOKENIZER.name,
    CONTROL.name,
    "eval-reconstruction",
    "eval-probe",
    "tokens-1d",
    "generator-1d",
    "eval-generation",
)


def tokenizer_recipe(run: Run) -> Recipe:
    """The recipe ``imagenette64_titok`` with the run's data, steps, batch and images (for
    :data:`BUILTIN` these equal the recipe's own)."""
    budget = run.budget
    overrides = [
        f"data.train={run.data}",
        *data_split(budget),
        f"training.batch_size={budget.batch_size}",
        f"training.max_train_steps={budget.tokenizer_steps}",
        f"experiment.output_dir={run.path(TOKENIZER.folder)}",
    ]
    return load_recipe(RECIPES / "imagenette64_titok.yaml", overrides, mode="single_stage")


def control_recipe(run: Run, steps: int) -> Recipe:
    """The 2D VQGAN f=8 of the reproduction, trained like the TiTok: L2 only, same batch and schedule shape."""
    overrides = [
        f"model.channel_mult={VQGAN_MULT[8]}",
        *VQGAN_MODEL,
        f"data.train={run.data}",
        f"data.image_size={IMAGE_SIZE}",
        *data_split(run.budget),
        "losses.perceptual_loss=none",
        "losses.perceptual_weight=0.0",
        "losses.discriminator_start=100000000",
        f"training.batch_size={run.budget.batch_size}",
        f"training.max_train_steps={steps}",
        "lr_scheduler.warmup_steps=300",
        "lr_scheduler.end_lr=1.0e-5",
        f"experiment.output_dir={run.path(CONTROL.folder)}",
        "experiment.save_every=250",
        "experiment.keep_last=40",
        "experiment.log_every=50",
        "experiment.image_every=1000",
    ]
    return load_recipe(RECIPES / "tiny_vqgan.yaml", overrides, mode="vqgan")


def write_report(run: Run) -> Path:
    """``<run>/report.md``: what each model saw and took, its figures, grids and curves."""
    results = run.path("results")
    recon = json.loads((results / "reconstruction.json").read_text())
    probe = json.loads((results / "probe.json").read_text())
    gen = json.loads((results / "generation.json").read_text())["1d"]
    stages = run.state["stages"]
    intro = (
        f"Data `{run.data}` (Imagenette train split, {run.budget.holdout} images held out with seed 0, 64x64). "
        f"torch {torch.__version__}. Reproduce with `python -m titok.reproduce.builtin -o RUN`."
    )
    timing = [[name, f"{v['seconds'] / 60:.1f} min", v.get("threads", "")] for name, v in stages.items()]
    net = feature_network(find_key(recon[TOKENIZER.name], "rFID"))
    lines = [
        *section(
            "The built-in imagenette64 models",
            intro,
            table(["stage", "wall time", "threads"], timing, "lrr"),
            level=1,
        ),
        *section(
            f"Reconstruction and probing ({int(recon[TOKENIZER.name]['num_images'])} held-out images)",
            _tokenizer_table(run, recon, probe, net),
            "Originals, then the TiTok's and the VQGAN's reconstructions:",
            "\n".join(
                [
                    image("originals", "results/originals.png"),
                    *[image(t.name, f"results/reconstructions-{t.name}.png") for t in (TOKENIZER, CONTROL)],
                ]
            ),
        ),
        *section(
            f"Generation (MaskGIT on the TiTok's {TOKENIZER.num_tokens} tokens)",
            f"{int(gen['num_images'])} class-balanced samples: gFID[{net}] {gen[f'gFID[{net}]']:.1f}, "
            f"IS[{net}] {gen[f'IS[{net}]']:.2f}; the classifier assigns {gen['class_agreement']:.0%} of them to the "
            f"requested class (chance 10%; real held-out images: {gen['class_agreement_real_heldout']:.0%}). "
            f"{gen['images_per_second']:.0f} images/s (batch {int(gen['batch_size'])}, tokens and pixels)."
            + (f" Sampling: {sampling_text(gen['sampling'])}." if gen.get("sampling") else ""),
            image("samples, one row per class", "results/samples-1d.png"),
        ),
    ]
    if (results / "curves.png").is_file():
        lines += section(
            "Training curves (held-out PSNR and codes used at each checkpoint)",
            image("curves", "results/curves.png"),
        )
    return write_markdown(run.path("report.md"), lines)


def _tokenizer_table(run: Run, recon: dict, probe: dict, net: str) -> str:
    """Both tokenizers: tokens, training images, held-out reconstruction, codebook use, probes."""
    steps = {
        TOKENIZER: tokenizer_recipe(run).training.max_train_steps,
        CONTROL: run.state["stages"][CONTROL.name]["control_steps"],
    }
    header = [
        "tokenizer",
        "tokens",
        "training images",
        "PSNR",
        "SSIM",
        f"rFID[{net}]",
        "codes used",
        "perplexity",
    ]
    header += ["probe top-1 (mean)", "probe top-1 (concat)"]
    rows = []
    for t in (TOKENIZER, CONTROL):
        r, p = recon[t.name], probe[t.name]
        rows.append(
            [t.name, t.num_tokens, steps[t] * run.budget.batch_size, f"{r['PSNR']:.2f}", f"{r['SSIM']:.3f}"]
            + [f"{r[f'rFID[{net}]']:.1f}", f"{r['codebook_used']:.0%}", f"{r['codebook_perplexity']:.0f}"]
            + [f"{p['top1_mean']:.3f}", f"{p['top1_concat']:.3f}"]
        )
    return table(header, rows, "l" + "r" * (len(header) - 1))


def run_builtin(
    output: str | Path,
    data: str | None = None,
    stages: list[str] | None = None,
    control_steps: int = 2000,
    budget: Budget = BUILTIN,
) -> Run:
    """Run (or continue) the chosen stages (all by default) in ``output``.

    ``budget`` is :data:`BUILTIN` for the shipped models; a smaller one runs the same stages in
    miniature (the test suite's check of this pipeline).

    Raises:
        ConfigError: ``stages`` names a stage this run does not have.
    """
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    run = Run(Path(output), budget, data or default_data())
    todo = {
        "classifier": lambda: stage_classifier(run),
        TOKENIZER.name: lambda: train_stage(tokenizer_recipe(run)),
        CONTROL.name: lambda: {
            **train_stage(control_recipe(run, control_steps)),
            "control_steps": control_steps,
        },
        "eval-reconstruction": lambda: stage_eval_reconstruction(run, (TOKENIZER, CONTROL)),
        "eval-probe": lambda: stage_eval_probe(run, (TOKENIZER, CONTROL)),
        "tokens-1d": lambda: stage_tokens(run, "1d", TOKENIZER),
        "generator-1d": lambda: stage_generator(run, "1d")(),
        "eval-generation": lambda: stage_eval_generation(run, ("1d",)),
    }
    for name in STAGES:
        if stages is None or name in stages:
            run.stage(name, todo[name])
    return run


def main(argv: list[str] | None = None) -> int:
    """``python -m titok.reproduce.builtin``; returns the exit code (2 with a one-line error for a
    user error, like the ``titok`` command)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-o", "--output", required=True, type=Path)
    parser.add_argument(
        "--data",
        default=None,
        help="Imagenette shards (default: $TITOK_DATA, else ../shared/data/imagenette)",
    )
    parser.add_argument("--stages", nargs="*", default=None, help=f"some of: {' '.join(STAGES)}")
    parser.add_argument("--control-steps", type=int, default=2000)
    parser.add_argument("--report", action="store_true", help="write report.md once every stage is done")
    parser.add_argument("--ship", type=Path, default=None, help="copy the models to this assets folder")
    args = parser.parse_args(argv)
    try:
        _main(args)
    except TitokError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _main(args: argparse.Namespace) -> None:
    run = run_builtin(args.output, args.data, args.stages, args.control_steps)
    print(json.dumps({k: v.get("seconds") for k, v in run.state["stages"].items()}, indent=2))
    if args.report:
        print(f"report: {write_report(run)}")
    if args.ship is not None:
        from titok.reproduce.ship import ship_models

        for path in ship_models(run.output, args.ship):
            print(f"shipped: {path}")


if __name__ == "__main__":
    sys.exit(main())
