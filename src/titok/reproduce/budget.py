"""How much compute each stage of the Imagenette-64 reproduction gets, and the models it trains.

Three budgets: ``default`` (at most about 2 hours on a 2-core CPU), ``quick`` (at most about 20
minutes) and ``tiny`` (a handful of steps on a few dozen images: the test suite's check that every
stage and the report work). The architectures are the same in every budget, only steps and image
counts change, so a quick run is a shorter default run, not another experiment.

Tokenizer budget: every tokenizer sees the same number of training images
(``tokenizer_steps * batch_size``). A 2D VQGAN trains for ``tokenizer_steps``; a two-stage TiTok
trains ``stage1_steps`` on the teacher's codes then ``tokenizer_steps - stage1_steps`` to
pixels; a single-stage TiTok trains straight to pixels at the smaller ``single_stage_batch``,
so for proportionally more steps (short runs need the optimizer steps to leave the mean-image
plateau, see docs/reproduce.md).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from titok.errors import ConfigError

IMAGE_SIZE = 64
PATCH_SIZE = 8


@dataclass(frozen=True)
class Budget:
    """Steps, batch sizes and image counts of one reproduction run.

    Attributes:
        name: budget name (recorded in the report).
        token_counts: numbers of latent tokens K of the TiTok tokenizers.
        batch_size: tokenizer training batch.
        tokenizer_steps: optimizer steps of every tokenizer (both stages together for TiTok).
        stage1_steps: TiTok stage-1 steps (the rest of ``tokenizer_steps`` is stage 2).
        single_stage_batch: batch of the single-stage TiTok tokenizers; must divide
            ``tokenizer_steps * batch_size``.
        discriminator_start: step of the GAN loss in VQGAN and stage-2 training.
        generator_steps, generator_batch: MaskGIT generator training.
        classifier_epochs: epochs of the feature-network classifier.
        max_train_images: train on the first N images of the train split (None: all).
        holdout: held-out validation images (taken out of training everywhere).
        eval_images: held-out images used for reconstruction metrics (<= holdout).
        probe_train_images: training images of the linear probe.
        generated_images: samples per generator for generation FID/IS.
        speed_batch, speed_runs: generation throughput measurement.
        grid_images: images per reconstruction grid.
    """

    name: str
    token_counts: tuple[int, ...] = (8, 16, 32, 64)
    batch_size: int = 32
    tokenizer_steps: int = 240
    stage1_steps: int = 120
    single_stage_batch: int = 8
    discriminator_start: int = 160
    generator_steps: int = 1000
    generator_batch: int = 64
    classifier_epochs: int = 4
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
        if self.single_stage_batch < 1 or (self.tokenizer_steps * self.batch_size) % self.single_stage_batch:
            raise ConfigError(
                f"budget {self.name}: single_stage_batch {self.single_stage_batch} must divide the tokenizer "
                f"budget of {self.tokenizer_steps * self.batch_size} images"
            )
        if self.eval_images > self.holdout:
            raise ConfigError(f"budget {self.name}: eval_images {self.eval_images} > holdout {self.holdout}")
        if not self.token_counts:
            raise ConfigError(f"budget {self.name}: token_counts is empty")

    @property
    def stage2_steps(self) -> int:
        return self.tokenizer_steps - self.stage1_steps

    @property
    def single_stage_steps(self) -> int:
        """Steps of a single-stage TiTok: the tokenizer budget in images over its batch."""
        return self.tokenizer_steps * self.batch_size // self.single_stage_batch

    @property
    def single_stage_discriminator_start(self) -> int:
        """The GAN start of the single-stage runs, at the same fraction of their images."""
        return self.discriminator_start * self.batch_size // self.single_stage_batch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


BUDGETS: dict[str, Budget] = {
    "default": Budget(name="default"),
    "quick": Budget(
        name="quick",
        tokenizer_steps=32,
        stage1_steps=16,
        discriminator_start=24,
        generator_steps=300,
        classifier_epochs=1,
        eval_images=200,
        probe_train_images=1000,
        generated_images=200,
    ),
    "tiny": Budget(
        name="tiny",
        token_counts=(8, 16),
        batch_size=4,
        tokenizer_steps=4,
        stage1_steps=2,
        single_stage_batch=2,
        discriminator_start=1,
        generator_steps=4,
        generator_batch=8,
        classifier_epochs=1,
        max_train_images=40,
        eval_images=12,
        probe_train_images=24,
        generated_images=12,
        speed_batch=4,
        speed_runs=1,
        grid_images=4,
    ),
}


def token_count(name: str) -> int:
    """K of a TiTok tokenizer name (``titok-k32``, ``titok-k32-single``)."""
    match = re.fullmatch(r"titok-k(\d+)(-single)?", name)
    if match is None:
        raise ConfigError(f"not a TiTok tokenizer name: {name!r}")
    return int(match.group(1))


def get_budget(name: str) -> Budget:
    """The budget called ``name``."""
    try:
        return BUDGETS[name]
    except KeyError:
        raise ConfigError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
