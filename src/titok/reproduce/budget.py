"""How much compute each stage of the Imagenette-64 reproduction gets, and the models it trains.

Three budgets: ``default`` (at most about 2.5 hours on a 2-core CPU), ``quick`` (at most about
20 minutes) and ``tiny`` (a handful of steps on a few dozen images: the test suite's check that
every stage and the report work). The architectures are the same in every budget, only steps and
image counts change, so a quick run is a shorter default run, not another experiment.

Tokenizer budget: every tokenizer sees the same number of training images
(``tokenizer_steps * batch_size``), with the same learning-rate warm-up (:meth:`Budget.warmup_steps`).
The single-stage TiTok tokenizers (K in ``token_counts``, the built-in model's recipe
``imagenette64_titok``) and the 2D VQGANs train for ``tokenizer_steps``; a two-stage TiTok (the
authors' recipe, K in ``two_stage_token_counts``) trains ``stage1_steps`` on the f=8 VQGAN's codes
then ``tokenizer_steps - stage1_steps`` to pixels.

Two fields serve only the built-in run (:mod:`titok.reproduce.builtin`): the epochs of the
perceptual network of the decoder fine-tuning (``perceptual_epochs``) and the step at which that
fine-tuning stops and is exported (``finetune_steps``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from titok.errors import ConfigError

IMAGE_SIZE = 64
PATCH_SIZE = 8


@dataclass(frozen=True)
class Budget:
    """Steps, batch sizes and image counts of one reproduction run.

    Attributes:
        name: budget name (recorded in the report).
        token_counts: numbers of latent tokens K of the single-stage TiTok tokenizers.
        two_stage_token_counts: K of the two-stage TiTok tokenizers (may be empty).
        batch_size: tokenizer training batch.
        tokenizer_steps: optimizer steps of every tokenizer (both stages together for two-stage TiTok).
        stage1_steps: TiTok stage-1 steps (the rest of ``tokenizer_steps`` is stage 2).
        adversarial: the VQGANs and TiTok stage 2 add the GAN loss from ``discriminator_start``
            (and LPIPS when its weights are present); False: L2 only, like the single-stage TiTok
            recipe, so that PSNR compares tokenizers trained for the same objective.
        discriminator_start: step of the GAN loss in VQGAN and stage-2 training (if ``adversarial``).
        generator_steps, generator_batch: MaskGIT generator training.
        classifier_epochs: epochs of the feature-network classifier.
        perceptual_epochs: epochs of the built-in run's perceptual network (the second classifier,
            read by the decoder fine-tuning's perceptual loss).
        finetune_steps: the step at which the built-in run's decoder fine-tuning stops and is
            exported (the recipe ``imagenette64_finetune``'s ``stop_at_step``; its other step
            counts scale with it).
        max_train_images: train on the first N images of the train split (None: all).
        holdout: held-out validation images (taken out of training everywhere).
        eval_images: held-out images used for reconstruction metrics (<= holdout).
        probe_train_images: training images of the linear probe.
        generated_images: samples per generator for generation FID/IS.
        speed_batch, speed_runs: generation throughput measurement.
        grid_images: images per reconstruction grid.
    """

    name: str
    token_counts: tuple[int, ...] = (16, 32, 64)
    two_stage_token_counts: tuple[int, ...] = ()
    batch_size: int = 32
    tokenizer_steps: int = 1500
    stage1_steps: int = 750
    adversarial: bool = False
    discriminator_start: int = 1000
    generator_steps: int = 1500
    generator_batch: int = 64
    classifier_epochs: int = 4
    perceptual_epochs: int = 16
    finetune_steps: int = 1000
    max_train_images: int | None = None
    holdout: int = 500
    eval_images: int = 500
    probe_train_images: int = 2000
    generated_images: int = 500
    speed_batch: int = 32
    speed_runs: int = 3
    grid_images: int = 8
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0 < self.stage1_steps < self.tokenizer_steps:
            raise ConfigError(
                f"budget {self.name}: stage1_steps must lie in (0, tokenizer_steps={self.tokenizer_steps}), "
                f"got {self.stage1_steps}"
            )
        if self.eval_images > self.holdout:
            raise ConfigError(f"budget {self.name}: eval_images {self.eval_images} > holdout {self.holdout}")
        if not self.token_counts:
            raise ConfigError(f"budget {self.name}: token_counts is empty")
        if self.perceptual_epochs < 1 or self.finetune_steps < 1:
            raise ConfigError(
                f"budget {self.name}: perceptual_epochs and finetune_steps must be >= 1, "
                f"got {self.perceptual_epochs} and {self.finetune_steps}"
            )

    @property
    def stage2_steps(self) -> int:
        return self.tokenizer_steps - self.stage1_steps

    @property
    def tokenizer_images(self) -> int:
        """Training images seen by every tokenizer."""
        return self.tokenizer_steps * self.batch_size

    @staticmethod
    def warmup_steps(steps: int) -> int:
        """Linear learning-rate warm-up of a run of ``steps``: a fifth of it, at most 300 steps.

        A gentle start keeps a fresh TiTok from collapsing onto the mean image (docs/learning.md);
        the VQGANs get the same schedule.
        """
        return max(1, min(300, steps // 5))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


BUDGETS: dict[str, Budget] = {
    "default": Budget(name="default"),
    "quick": Budget(
        name="quick",
        token_counts=(32,),
        tokenizer_steps=250,
        stage1_steps=125,
        generator_steps=300,
        classifier_epochs=1,
        eval_images=200,
        probe_train_images=1000,
        generated_images=200,
    ),
    "tiny": Budget(
        name="tiny",
        token_counts=(8, 16),
        two_stage_token_counts=(8,),
        batch_size=4,
        tokenizer_steps=4,
        stage1_steps=2,
        adversarial=True,
        discriminator_start=1,
        generator_steps=4,
        generator_batch=8,
        classifier_epochs=1,
        perceptual_epochs=1,
        finetune_steps=4,
        max_train_images=40,
        eval_images=12,
        probe_train_images=24,
        generated_images=12,
        speed_batch=4,
        speed_runs=1,
        grid_images=4,
    ),
}


def get_budget(name: str) -> Budget:
    """The budget called ``name``."""
    try:
        return BUDGETS[name]
    except KeyError:
        raise ConfigError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
