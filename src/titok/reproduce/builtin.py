"""The run that makes the built-in ``imagenette64`` models: one TiTok, its controls, its generator.

Stages, each recorded in ``<run>/state.json`` with its wall time and skipped when done:

* ``classifier``: the feature network of rFID/gFID/IS and of the class-assignment check;
* ``perceptual-net``: a second classifier, read by the decoder fine-tuning's perceptual loss (not
  the one that measures, so the fine-tuning is not judged by the network it was trained against);
* ``titok-k32-single``: the tokenizer, recipe ``imagenette64_titok`` (TiTok straight to pixels,
  latent centering and dead-code restarts);
* ``vqgan-f8``: the 2D control, a VQGAN with 8 x 8 = 64 tokens trained with the same L2 loss (no GAN),
  for ``control_steps`` steps at the same batch (its checkpoints give the comparison at equal
  numbers of training images);
* ``titok-k32-finetune``: the paper's decoder fine-tuning in miniature, recipe
  ``imagenette64_finetune``: encoder, latent tokens and quantizer frozen (the same tokens), the
  ViT decoder and a fresh convolutional upsampler (bilinear) trained to pixels with L2 + perceptual + GAN, stopped
  and exported at ``finetune_steps``; this is the shipped tokenizer;
* ``eval-reconstruction``, ``eval-probe``: PSNR, SSIM, rFID, seam and pattern scores, codebook use
  and linear probes on the 500 held-out images, for the tokenizers before and after fine-tuning
  and the VQGAN (one probe for both TiTok decoders: they share the tokens);
* ``tokens-1d``, ``generator-1d``: the MaskGIT generator on the TiTok's tokens of the train split;
* ``eval-generation``: gFID/IS and the share of samples that the classifier assigns to the
  requested class (and the same share for real held-out images), the samples decoded before and
  after fine-tuning.

Usage::

    python -m titok.reproduce.builtin -o runs/imagenette64-builtin [--stages classifier ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from titok.class_names import IMAGENETTE_CLASSES
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
    fmt,
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
#: The tokenizer after decoder fine-tuning (the shipped one): the same tokens, another decoder.
FINETUNED = TokenizerStage.decoder_finetuned(TOKENIZER.num_tokens)
#: The results key of the generator's samples decoded by :data:`FINETUNED`.
GENERATION_FINETUNED = "1d-finetuned"

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
    "perceptual-net",
    TOKENIZER.name,
    CONTROL.name,
    FINETUNED.name,
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


def finetune_recipe(run: Run) -> Recipe:
    """The recipe ``imagenette64_finetune`` on the run's tokenizer, data and perceptual network.

    It stops at the budget's ``finetune_steps``; the recipe's other step counts (schedule length,
    warm-up, GAN start, checkpoint interval) scale with it, so that :data:`BUILTIN` (1000, the
    recipe's ``stop_at_step``) keeps them as they are.
    """
    path = RECIPES / "imagenette64_finetune.yaml"
    base = load_recipe(path, mode="stage2")
    budget = run.budget
    scale = budget.finetune_steps / (base.training.stop_at_step or base.training.max_train_steps)

    def scaled(steps: int) -> int:
        return max(1, round(steps * scale))

    overrides = [
        f"init_from={TOKENIZER.export_dir(run.output)}",
        f"data.train={run.data}",
        *data_split(budget),
        f"losses.perceptual_network={run.path('perceptual-net')}",
        f"losses.discriminator_start={scaled(base.losses['discriminator_start'])}",
        f"training.batch_size={budget.batch_size}",
        f"training.max_train_steps={scaled(base.training.max_train_steps)}",
        f"training.stop_at_step={budget.finetune_steps}",
        f"lr_scheduler.warmup_steps={scaled(base.lr_scheduler.warmup_steps)}",
        f"experiment.output_dir={run.path(FINETUNED.folder)}",
        f"experiment.save_every={scaled(base.experiment.save_every)}",
        "experiment.image_every=0",
    ]
    return load_recipe(path, overrides, mode="stage2")


def stage_perceptual_net(run: Run) -> dict[str, Any]:
    """Train the perceptual network of the decoder fine-tuning (the recipe header's command)."""
    from titok.evaluation.classifier_training import ClassifierTrainingConfig, train_classifier

    budget = run.budget
    config = ClassifierTrainingConfig(
        data=run.data,
        name="imagenette64-perceptual",
        image_size=IMAGE_SIZE,
        holdout=budget.holdout,
        holdout_seed=0,
        max_train_images=budget.max_train_images,
        max_val_images=budget.eval_images,
        num_classes=len(IMAGENETTE_CLASSES),
        widths=(24, 48, 96, 192),
        epochs=budget.perceptual_epochs,
        seed=1,
    )
    result = train_classifier(config, run.path("perceptual-net"), resume=True, progress=False)
    return {"val_top1": result.val_top1}


def stage_finetune(run: Run) -> dict[str, Any]:
    """Fine-tune the tokenizer's decoder and export the checkpoint it stops at."""
    from titok.training.export import export_run

    recipe = finetune_recipe(run)
    record = train_stage(recipe)
    export_run(recipe.experiment.output_dir, run.budget.finetune_steps, FINETUNED.export_dir(run.output))
    return {**record, "export_step": run.budget.finetune_steps}


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
    generation = json.loads((results / "generation.json").read_text())
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
            f"{FINETUNED.name} is {TOKENIZER.name} with its decoder fine-tuned: the same tokens, so "
            "the same probe.",
            "Originals, then the reconstructions of the TiTok before and after decoder fine-tuning "
            "and of the VQGAN:",
            "\n".join(
                [
                    image("originals", "results/originals.png"),
                    *[
                        image(t.name, f"results/reconstructions-{t.name}.png")
                        for t in (TOKENIZER, FINETUNED, CONTROL)
                    ],
                ]
            ),
        ),
        *section(
            "Decoder fine-tuning (the paper's Table 3a in miniature)",
            "The paper's TiTok-L-32 goes from rFID 5.48 to 2.21 by decoder fine-tuning alone (encoder "
            "and quantizer frozen, the decoder trained to pixels with L2 + perceptual + GAN). Here, "
            "beside the 2D VQGAN trained with L2 only:",
            _finetune_table(recon, generation, net),
            "Seam score: the mean pixel step across the 8-px patch borders over that inside patches "
            f"(originals: {fmt(recon[TOKENIZER.name].get('seam_score_originals', float('nan')))}). "
            "Pattern score: how much one texture repeats in every patch (0: none, 1: the same in "
            f"every patch; originals: {fmt(recon[TOKENIZER.name].get('pattern_score_originals', float('nan')))}).",
        ),
        *section(
            f"Generation (MaskGIT on the TiTok's {TOKENIZER.num_tokens} tokens)",
            _generation_text(generation["1d"], net, "decoded by the tokenizer it was trained on"),
            _generation_text(
                generation[GENERATION_FINETUNED], net, "the same tokens decoded after fine-tuning"
            )
            if GENERATION_FINETUNED in generation
            else None,
            image("samples, one row per class", "results/samples-1d.png"),
            image("the same, decoded after fine-tuning", f"results/samples-{GENERATION_FINETUNED}.png")
            if GENERATION_FINETUNED in generation
            else None,
        ),
    ]
    if (results / "curves.png").is_file():
        lines += section(
            "Training curves (held-out PSNR and codes used at each checkpoint)",
            image("curves", "results/curves.png"),
        )
    return write_markdown(run.path("report.md"), lines)


def _generation_text(gen: dict, net: str, decoded: str) -> str:
    """One generator entry of ``generation.json`` in a sentence."""
    return (
        f"{int(gen['num_images'])} class-balanced samples, {decoded}: gFID[{net}] {gen[f'gFID[{net}]']:.1f}, "
        f"IS[{net}] {gen[f'IS[{net}]']:.2f}; the classifier assigns {gen['class_agreement']:.0%} of them to the "
        f"requested class (chance 10%; real held-out images: {gen['class_agreement_real_heldout']:.0%}). "
        f"{gen['images_per_second']:.0f} images/s (batch {int(gen['batch_size'])}, tokens and pixels)."
        + (f" Sampling: {sampling_text(gen['sampling'])}." if gen.get("sampling") else "")
    )


def _finetune_table(recon: dict, generation: dict, net: str) -> str:
    """Before and after decoder fine-tuning, and the VQGAN: reconstruction, seams, generation."""
    decoded = {TOKENIZER.name: generation.get("1d"), FINETUNED.name: generation.get(GENERATION_FINETUNED)}
    header = [
        "tokenizer",
        "PSNR",
        f"rFID[{net}]",
        "seam score",
        "pattern score",
        f"gFID[{net}]",
        "class agreement",
    ]
    rows = []
    for t in (TOKENIZER, FINETUNED, CONTROL):
        r, gen = recon[t.name], decoded.get(t.name)
        rows.append(
            [
                f"{t.name} ({t.label})",
                f"{r['PSNR']:.2f}",
                f"{r[f'rFID[{net}]']:.1f}",
                fmt(r.get("seam_score", float("nan"))),
                fmt(r.get("pattern_score", float("nan"))),
                "" if gen is None else f"{gen[f'gFID[{net}]']:.1f}",
                "" if gen is None else f"{gen['class_agreement']:.0%}",
            ]
        )
    return table(header, rows, "l" + "r" * (len(header) - 1))


def _tokenizer_table(run: Run, recon: dict, probe: dict, net: str) -> str:
    """The tokenizers: tokens, training images, held-out reconstruction, codebook use, probes."""
    batch = run.budget.batch_size
    tokenizer_images = tokenizer_recipe(run).training.max_train_steps * batch
    finetune_images = run.state["stages"][FINETUNED.name]["export_step"] * batch
    images = {
        TOKENIZER: f"{tokenizer_images}",
        FINETUNED: f"{tokenizer_images} + {finetune_images}",
        CONTROL: f"{run.state['stages'][CONTROL.name]['control_steps'] * batch}",
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
        "probe top-1 (mean)",
        "probe top-1 (concat)",
    ]
    rows = []
    for t in (TOKENIZER, FINETUNED, CONTROL):
        r, p = recon[t.name], probe[t.base.name]
        rows.append(
            [t.name, t.num_tokens, images[t], f"{r['PSNR']:.2f}", f"{r['SSIM']:.3f}"]
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
        "perceptual-net": lambda: stage_perceptual_net(run),
        TOKENIZER.name: lambda: train_stage(tokenizer_recipe(run)),
        CONTROL.name: lambda: {
            **train_stage(control_recipe(run, control_steps)),
            "control_steps": control_steps,
        },
        FINETUNED.name: lambda: stage_finetune(run),
        "eval-reconstruction": lambda: stage_eval_reconstruction(run, (TOKENIZER, FINETUNED, CONTROL)),
        "eval-probe": lambda: stage_eval_probe(run, (TOKENIZER, CONTROL)),
        "tokens-1d": lambda: stage_tokens(run, "1d", TOKENIZER),
        "generator-1d": lambda: stage_generator(run, "1d")(),
        "eval-generation": lambda: stage_eval_generation(run, ("1d",), {GENERATION_FINETUNED: FINETUNED}),
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

        for path in ship_models(run.output, args.ship, tokenizer=FINETUNED):
            print(f"shipped: {path}")


if __name__ == "__main__":
    sys.exit(main())
