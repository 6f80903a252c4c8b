"""The training recipes of the Imagenette-64 reproduction, built from the packaged recipes.

Architectures (the same in every budget):

* 2D VQGAN tokenizers: 32 base channels, one residual block per level, 32-dim codes, 1024
  codes; ``channel_mult`` (1, 2, 2, 4) for f=8 (8 x 8 = 64 tokens at 64 px) and (1, 2, 2, 4, 4)
  for f=16 (4 x 4 = 16 tokens). The f=8 one is the proxy-code teacher of the two-stage TiTok.
* Single-stage TiTok tokenizers: the built-in model's recipe ``imagenette64_titok`` (patch 8,
  ViT encoder and decoder of width 128, depth 4, 12-dim codes, 1024 codes, latent centering and
  dead-code restarts, straight to pixels with L2) with K latent tokens.
* Two-stage TiTok tokenizers (the authors' recipe): the same ViT; stage 1 on the teacher's codes,
  stage 2 decodes through the teacher's decoder. ``centering=True`` (``titok reproduce
  --latent-centering``) trains them with ``model.latent_centering`` and without weight averaging.
* MaskGIT generators: BERT of width 128, depth 4, 4 heads, same for 1D and 2D tokens.

Every tokenizer gets the warm-up of :meth:`Budget.warmup_steps`; with ``budget.adversarial``
False, the VQGANs and stage 2 train with L2 alone, like the single-stage recipe.
"""

from __future__ import annotations

from pathlib import Path

from titok.reproduce.budget import IMAGE_SIZE, PATCH_SIZE, Budget
from titok.resources import recipes_dir
from titok.training.config import Recipe, load_recipe

RECIPES = recipes_dir()

VQGAN_MULT = {8: [1, 2, 2, 4], 16: [1, 2, 2, 4, 4]}
VQGAN_MODEL = [
    "model.hidden_channels=32",
    "model.num_res_blocks=1",
    "model.z_channels=32",
    "model.codebook_size=1024",
]
TITOK_MODEL = [
    "model.preset=titok-tiny-64",
    f"model.image_size={IMAGE_SIZE}",
    f"model.patch_size={PATCH_SIZE}",
    "model.encoder_width=128",
    "model.decoder_width=128",
    "model.encoder_depth=4",
    "model.decoder_depth=4",
    "model.encoder_heads=4",
    "model.decoder_heads=4",
    "model.token_size=12",
    "model.codebook_size=1024",
]
GENERATOR_MODEL = [
    "model.hidden_size=128",
    "model.depth=4",
    "model.heads=4",
    "model.intermediate_size=512",
]


def data_split(budget: Budget) -> list[str]:
    """Overrides that give a recipe the budget's training images: its hold-out (seed 0) and cap."""
    return [
        f"data.holdout={budget.holdout}",
        "data.holdout_seed=0",
        f"data.max_samples={'null' if budget.max_train_images is None else budget.max_train_images}",
    ]


def _common(budget: Budget, data: str, output: Path, steps: int, batch: int) -> list[str]:
    every = max(1, min(250, steps // 4))
    return [
        f"data.train={data}",
        f"data.image_size={IMAGE_SIZE}",
        *data_split(budget),
        f"data.shuffle_buffer={min(1000, budget.max_train_images or 1000)}",
        f"training.batch_size={batch}",
        f"training.max_train_steps={steps}",
        "training.seed=0",
        f"lr_scheduler.warmup_steps={budget.warmup_steps(steps)}",
        f"experiment.output_dir={output}",
        f"experiment.save_every={every}",
        "experiment.keep_last=1",
        f"experiment.log_every={max(1, min(10, steps // 10))}",
        f"experiment.image_every={0 if steps < 20 else steps}",
        f"experiment.num_images={budget.grid_images}",
    ]


NO_GAN = 100_000_000


def _losses(budget: Budget, discriminator_start: int) -> list[str]:
    """GAN (and LPIPS) from ``discriminator_start`` if the budget is adversarial; else L2 alone, with
    the single-stage recipe's final learning rate (1e-5) so that every tokenizer has one schedule."""
    if budget.adversarial:
        return [f"losses.discriminator_start={discriminator_start}"]
    return [
        "losses.perceptual_loss=none",
        "losses.perceptual_weight=0.0",
        f"losses.discriminator_start={NO_GAN}",
        "lr_scheduler.end_lr=1.0e-5",
    ]


def vqgan_recipe(budget: Budget, data: str, factor: int, output: Path) -> Recipe:
    """A 2D VQGAN with downsampling ``factor`` (8 or 16): L2 [+ GAN + LPIPS if the budget is adversarial]."""
    overrides = [
        f"model.channel_mult={VQGAN_MULT[factor]}",
        *VQGAN_MODEL,
        *_common(budget, data, output, budget.tokenizer_steps, budget.batch_size),
        *_losses(budget, budget.discriminator_start),
    ]
    return load_recipe(RECIPES / "tiny_vqgan.yaml", overrides, mode="vqgan")


def _centering(centering: bool) -> list[str]:
    """Latent centering (not the authors'); its running mean does not go with weight averaging."""
    return ["model.latent_centering=true", "training.use_ema=false"] if centering else []


def stage1_recipe(
    budget: Budget, data: str, tokens: int, teacher: Path, output: Path, centering: bool = False
) -> Recipe:
    """TiTok with ``tokens`` latent tokens, stage 1 on the teacher's codes."""
    overrides = [
        *TITOK_MODEL,
        f"model.num_latent_tokens={tokens}",
        f"teacher={teacher}",
        *_common(budget, data, output, budget.stage1_steps, budget.batch_size),
        *_centering(centering),
    ]
    return load_recipe(RECIPES / "tiny_stage1.yaml", overrides, mode="stage1")


def stage2_recipe(budget: Budget, data: str, stage1: Path, teacher: Path, output: Path) -> Recipe:
    """Stage 2 of a stage-1 TiTok: decoder and pixel decoder to pixels."""
    overrides = [
        f"init_from={stage1}",
        f"teacher={teacher}",
        *_common(budget, data, output, budget.stage2_steps, budget.batch_size),
        *_losses(budget, max(0, budget.discriminator_start - budget.stage1_steps)),
    ]
    return load_recipe(RECIPES / "tiny_stage2.yaml", overrides, mode="stage2")


def single_stage_recipe(budget: Budget, data: str, tokens: int, output: Path) -> Recipe:
    """TiTok with ``tokens`` latent tokens, recipe ``imagenette64_titok``, same images as the others."""
    overrides = [
        f"model.num_latent_tokens={tokens}",
        *_common(budget, data, output, budget.tokenizer_steps, budget.batch_size),
    ]
    return load_recipe(RECIPES / "imagenette64_titok.yaml", overrides, mode="single_stage")


def generator_recipe(
    budget: Budget, tokens: Path, output: Path, tokenizer: str | None, num_classes: int
) -> Recipe:
    """A MaskGIT generator on a pretokenized folder (class names from the ``tiny_generator`` recipe)."""
    steps = budget.generator_steps
    overrides = [
        *GENERATOR_MODEL,
        f"model.num_classes={num_classes}",
        f"data.train={tokens}",
        f"training.batch_size={budget.generator_batch}",
        f"training.max_train_steps={steps}",
        "training.seed=0",
        f"lr_scheduler.warmup_steps={max(1, min(50, steps // 10))}",
        f"experiment.output_dir={output}",
        f"experiment.save_every={max(1, min(250, steps // 4))}",
        "experiment.keep_last=1",
        f"experiment.log_every={max(1, min(20, steps // 10))}",
        "experiment.image_every=0",
    ]
    if tokenizer is not None:
        overrides.append(f"model.tokenizer={tokenizer}")
    return load_recipe(RECIPES / "tiny_generator.yaml", overrides, mode="generator")
