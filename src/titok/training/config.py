"""Training recipes: dataclasses, YAML loading, ``${ENV}`` expansion and dotted overrides.

A recipe is a YAML file with the sections below (all optional except ``mode``)::

    mode: stage1                 # vqgan | stage1 | stage2 | single_stage | generator
    model: {preset: titok-s128-stage1, num_latent_tokens: 128}   # TiTokConfig fields (VQGANConfig for vqgan)
    teacher: maskgit-vqgan       # stage 1/2: proxy-code VQGAN (our export folder, a weights file or the name)
    init_from: runs/s128-stage1/export   # stage 2: the stage-1 tokenizer to start from
    teacher_codes: online        # stage 1: "online" (every step) or "cache" (once per image)
    data: {train: "${TITOK_DATA:-../shared/data/imagenette}", num_workers: 4}
    losses: {...}                # titok.losses.LossConfig fields, plus kl_weight (VAE)
    optimizer: {learning_rate: 1e-4, beta2: 0.99, ...}
    lr_scheduler: {name: cosine, warmup_steps: 10_000, end_lr: 1e-5}
    training: {batch_size: 32, max_train_steps: 1_000_000, mixed_precision: fp16, ...}
    experiment: {output_dir: runs/x, save_every: 50_000, keep_last: 3, log_every: 50, ...}
    prefix: {enabled: true, per: sample, distribution: uniform}   # train on token prefixes

Overrides are ``section.key=value`` strings (the value is parsed as YAML), e.g.
``training.batch_size=64`` or ``model.num_latent_tokens=64``. String values may use
``${NAME}`` or ``${NAME:-default}`` to read environment variables. An unknown key, in the file
or in an override, is a :class:`~titok.errors.ConfigError` naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from titok.errors import ConfigError
from titok.fieldtypes import check_field_types
from titok.losses import LossConfig
from titok.models.config import TiTokConfig
from titok.models.vqgan import VQGANConfig
from titok.training.parsing import apply_override, build_section, expand_env, load_yaml
from titok.training.prefix import PrefixSection

#: Training modes, one task per mode.
MODES = ("vqgan", "stage1", "stage2", "single_stage", "generator")
MIXED_PRECISION = ("no", "fp16", "bf16")
SCHEDULERS = ("cosine", "constant")
TEACHER_CODES = ("online", "cache")
#: Keys of the ``losses`` section that are ours, not :class:`LossConfig` fields.
EXTRA_LOSS_KEYS = {"kl_weight": 1e-6}
#: The ``losses`` keys of the ``generator`` mode and their defaults (the authors' MaskGIT loss).
GENERATOR_LOSS_KEYS = {"label_smoothing": 0.1, "loss_weight_unmasked_token": 0.1}


@dataclass
class DataSection:
    """Training data: the :class:`titok.data.DataConfig` fields a recipe sets (``train`` is its
    ``path``; batch size, seed and the endless pass come from ``training``). Every other field
    has the DataConfig field's name, type and default (checked by the tests), and is passed on
    by name (:meth:`titok.training.task.ImageTask.data_config`).

    Attributes:
        train: data spec: tar shard pattern, shard folder, ImageFolder tree, image list, or a list.
        image_size: side of the training crops (None: the model's ``image_size``).
        num_workers: DataLoader workers per process.
        augment: random crop + horizontal flip (else center crop).
        fast_jpeg: reduced-scale JPEG decoding of large images.
        shuffle_buffer: per-reader shuffle buffer of sample locations.
        holdout: samples held out of training (for validation).
        holdout_seed: seed of the holdout choice.
        max_samples: keep the first N samples of the source.
        class_subset: keep only these class ids.
        require_labels: skip tar samples without ``.cls``.
        pin_memory: pin host memory of batches.
    """

    train: str | list[str] | None = None
    image_size: int | None = None
    num_workers: int = 0
    augment: bool = True
    fast_jpeg: bool = True
    shuffle_buffer: int = 1000
    holdout: int = 0
    holdout_seed: int = 0
    max_samples: int | None = None
    class_subset: list[int] | None = None
    require_labels: bool = True
    pin_memory: bool = False


@dataclass
class OptimizerSection:
    """AdamW settings (the discriminator has its own learning rate).

    Norm, bias, embedding and latent-token parameters get no weight decay.
    ``embedding_lr_scale`` multiplies the learning rate of the learned tokens and positional
    embeddings (latent tokens, mask token, class embedding, positional embeddings; see
    :data:`titok.training.optim.EMBEDDING_NAMES`). 1.0 is the authors' single rate. Adam moves
    every weight by about the learning rate per step whatever its scale, so these vectors,
    initialised at std ``width**-0.5``, change slowly at a rate chosen for the matrices; a small
    TiTok trained from scratch learns faster with a larger factor (docs/learning.md).
    """

    learning_rate: float = 1e-4
    discriminator_learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 1e-4
    epsilon: float = 1e-8
    embedding_lr_scale: float = 1.0


@dataclass
class SchedulerSection:
    """Learning-rate schedule: linear warm-up then cosine decay to ``end_lr`` (or constant)."""

    name: str = "cosine"
    warmup_steps: int = 10_000
    end_lr: float = 1e-5


@dataclass
class TrainingSection:
    """The optimisation loop.

    Attributes:
        batch_size: images per process and micro-step.
        gradient_accumulation_steps: micro-steps per optimizer step.
        mixed_precision: "no", "fp16" or "bf16".
        max_train_steps: optimizer steps of the whole run (sets the schedule).
        stop_at_step: stop (with a checkpoint) at this step, to continue later with ``--resume``.
        max_grad_norm: gradient clipping (None: off).
        seed: seed of initialisation, data order and augmentation.
        use_ema: keep an exponential moving average of the weights (exported when on).
        ema_decay: its largest decay; it warms up as ``(1 + t) / (10 + t)``.
        enable_tf32: allow TF32 matmuls on GPUs.
        on_nonfinite: a loss or gradient norm that is not finite (a diverging run): "stop" the
            run with one line naming the step (its last checkpoint stays intact), or "skip" the
            update and count it (``nonfinite_skipped/*`` in the logs).
    """

    batch_size: int = 32
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "fp16"
    max_train_steps: int = 1_000_000
    stop_at_step: int | None = None
    max_grad_norm: float | None = 1.0
    seed: int = 42
    use_ema: bool = True
    ema_decay: float = 0.999
    enable_tf32: bool = True
    on_nonfinite: str = "stop"


@dataclass
class ExperimentSection:
    """Outputs: checkpoints, logs, image grids and the final export.

    Attributes:
        output_dir: run folder (checkpoints, ``logs/`` for TensorBoard, ``images/``, ``export/``).
        save_every: checkpoint every N steps (and at the end).
        keep_last: checkpoints kept (older ones are deleted).
        log_every: scalars to TensorBoard and ``metrics.jsonl`` every N steps.
        image_every: reconstruction grid every N steps (0: never).
        num_images: images in a grid.
        progress_bar: show a tqdm bar with ETA on the main process.
    """

    output_dir: str = "runs/titok"
    save_every: int = 50_000
    keep_last: int = 3
    log_every: int = 50
    image_every: int = 5_000
    num_images: int = 8
    progress_bar: bool = True


@dataclass
class Recipe:
    """A whole training recipe (see the module docstring for the YAML layout)."""

    mode: str
    model: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    init_from: str | None = None
    teacher_codes: str = "online"
    data: DataSection = field(default_factory=DataSection)
    losses: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    lr_scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    experiment: ExperimentSection = field(default_factory=ExperimentSection)
    prefix: PrefixSection = field(default_factory=PrefixSection)
    #: Where the recipe came from (for messages); not a YAML key.
    source: str = field(default="<recipe>", compare=False)

    # ------------------------------------------------------------------ derived configs
    def loss_config(self) -> LossConfig:
        """The :class:`LossConfig` of the ``losses`` section (without our extra keys)."""
        own = {k: v for k, v in self.losses.items() if k not in EXTRA_LOSS_KEYS}
        try:
            return LossConfig.from_dict(own)
        except ConfigError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None

    def loss_extra(self, name: str) -> Any:
        """One of our extra ``losses`` keys (e.g. ``kl_weight``), or its default."""
        return self.losses.get(name, EXTRA_LOSS_KEYS[name])

    def titok_config(self, **forced: Any) -> TiTokConfig:
        """The tokenizer architecture: ``model.preset`` (if any) with the other ``model`` keys applied."""
        from titok.models.presets import tokenizer_config

        fields_ = {k: v for k, v in self.model.items() if k != "preset"}
        if self.prefix.enabled:
            forced = {"variable_length": True, **forced}
        for key, value in forced.items():
            if key in fields_ and fields_[key] != value:
                raise ConfigError(
                    f"{self.source}: 'model.{key}' is {fields_[key]!r} but mode {self.mode!r} needs {value!r}"
                )
            fields_[key] = value
        if isinstance(fields_.get("pixel_decoder"), dict):
            fields_["pixel_decoder"] = _vqgan_config(
                fields_["pixel_decoder"], self.source, "model.pixel_decoder"
            )
        try:
            if self.model.get("preset"):
                return tokenizer_config(str(self.model["preset"]), **fields_)
            return TiTokConfig(**fields_)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"{self.source}: model: {exc}") from None

    def vqgan_config(self) -> VQGANConfig:
        """The VQGAN architecture of a ``vqgan`` recipe (its ``model`` section)."""
        return _vqgan_config(self.model, self.source, "model")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (YAML-serialisable), as written next to the run's checkpoints."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


def _vqgan_config(d: dict[str, Any], source: str, where: str) -> VQGANConfig:
    known = {f.name for f in fields(VQGANConfig)}
    for key in d:
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{where}.{key}' (known: {', '.join(sorted(known))})")
    try:
        return VQGANConfig.from_dict(dict(d))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


# ---------------------------------------------------------------------------- loading


def load_recipe(
    path: str | os.PathLike[str],
    overrides: list[str] | tuple[str, ...] = (),
    mode: str | None = None,
) -> Recipe:
    """Read a YAML recipe, apply ``section.key=value`` overrides and check every key.

    Args:
        path: the YAML file.
        overrides: dotted overrides, applied in order after the file.
        mode: the mode the caller trains; a recipe for another mode is an error (a recipe
            without ``mode`` takes this one).

    Raises:
        ConfigError: unreadable file, unknown key, wrong value type or mode mismatch; the
            message names the file and the key.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: no such recipe file")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level")
    for item in overrides:
        apply_override(data, item, source)
    if mode is not None:
        found = data.setdefault("mode", mode)
        if found != mode:
            raise ConfigError(f"{source}: this recipe is for mode {found!r}, not {mode!r}")
    return recipe_from_dict(expand_env(data), source)


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Build and check a :class:`Recipe` from plain data (as read from YAML)."""
    if "mode" not in data:
        raise ConfigError(f"{source}: missing key 'mode' (one of {', '.join(MODES)})")
    recipe = build_section(Recipe, {k: v for k, v in data.items()}, "", source)
    recipe.source = source
    _check(recipe)
    return recipe


def _check(recipe: Recipe) -> None:
    """Cross-field checks; each error names the file and the key."""
    src = recipe.source
    if recipe.mode not in MODES:
        raise ConfigError(f"{src}: 'mode' must be one of {', '.join(MODES)}, got {recipe.mode!r}")
    t, e, s = recipe.training, recipe.experiment, recipe.lr_scheduler
    if t.mixed_precision not in MIXED_PRECISION:
        raise ConfigError(
            f"{src}: 'training.mixed_precision' must be one of {MIXED_PRECISION}, got {t.mixed_precision!r}"
        )
    if s.name not in SCHEDULERS:
        raise ConfigError(f"{src}: 'lr_scheduler.name' must be one of {SCHEDULERS}, got {s.name!r}")
    if recipe.teacher_codes not in TEACHER_CODES:
        raise ConfigError(
            f"{src}: 'teacher_codes' must be one of {TEACHER_CODES}, got {recipe.teacher_codes!r}"
        )
    positive = {
        "training.batch_size": t.batch_size,
        "training.gradient_accumulation_steps": t.gradient_accumulation_steps,
        "training.max_train_steps": t.max_train_steps,
        "experiment.save_every": e.save_every,
        "experiment.keep_last": e.keep_last,
        "experiment.log_every": e.log_every,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{src}: '{key}' must be > 0, got {value}")
    if t.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(f"{src}: 'training.on_nonfinite' must be 'stop' or 'skip', got {t.on_nonfinite!r}")
    for key in ("learning_rate", "discriminator_learning_rate"):
        value = getattr(recipe.optimizer, key)
        if not (value >= 0 and math.isfinite(value)):  # 0 is allowed: weights that must not move
            raise ConfigError(f"{src}: 'optimizer.{key}' must be a number >= 0, got {value}")
    if not recipe.optimizer.embedding_lr_scale > 0:
        raise ConfigError(
            f"{src}: 'optimizer.embedding_lr_scale' must be > 0, got {recipe.optimizer.embedding_lr_scale}"
        )
    if e.image_every < 0 or e.num_images < 0 or s.warmup_steps < 0:
        raise ConfigError(f"{src}: image_every, num_images and warmup_steps must be >= 0")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"{src}: 'training.ema_decay' must be in [0, 1), got {t.ema_decay}")
    if t.stop_at_step is not None and t.stop_at_step <= 0:
        raise ConfigError(f"{src}: 'training.stop_at_step' must be > 0, got {t.stop_at_step}")

    recipe.prefix.check(src)
    if recipe.prefix.enabled and recipe.mode == "vqgan":
        raise ConfigError(f"{src}: 'prefix.enabled' is for TiTok and generator modes, not vqgan")
    if recipe.mode == "generator":
        if recipe.prefix.with_full:
            raise ConfigError(
                f"{src}: 'prefix.with_full' is for tokenizer training; a generator's batch is cut to one length"
            )
        _check_generator(recipe)
        return
    allowed = (
        {f.name for f in fields(VQGANConfig)}
        if recipe.mode == "vqgan"
        else {f.name for f in fields(TiTokConfig)} | {"preset"}
    )
    for key in recipe.model:
        if key not in allowed:
            raise ConfigError(f"{src}: unknown key 'model.{key}' (known: {', '.join(sorted(allowed))})")
    check_field_types(VQGANConfig if recipe.mode == "vqgan" else TiTokConfig, recipe.model, "model.", src)
    loss_keys = {f.name for f in fields(LossConfig)} | set(EXTRA_LOSS_KEYS)
    for key in recipe.losses:
        if key not in loss_keys:
            raise ConfigError(f"{src}: unknown key 'losses.{key}' (known: {', '.join(sorted(loss_keys))})")
    recipe.loss_config()
    if recipe.model.get("latent_centering") and recipe.mode in ("stage1", "single_stage"):
        if t.use_ema:
            raise ConfigError(
                f"{src}: model.latent_centering with training.use_ema: the exported (averaged) weights "
                "would be paired with the running mean of the last weights; set training.use_ema=false"
            )
        if t.batch_size < 2:
            raise ConfigError(
                f"{src}: model.latent_centering needs training.batch_size >= 2, got {t.batch_size}"
            )
    if recipe.data.train is None:
        raise ConfigError(f"{src}: 'data.train' is not set (a tar shard pattern, folder or image list)")


def _check_generator(recipe: Recipe) -> None:
    """Keys of a ``generator`` recipe: ``model`` holds GeneratorConfig fields (+ ``preset``)."""
    from titok.models.generator import GeneratorConfig

    src = recipe.source
    allowed = {f.name for f in fields(GeneratorConfig)} | {"preset"}
    for key in recipe.model:
        if key not in allowed:
            raise ConfigError(f"{src}: unknown key 'model.{key}' (known: {', '.join(sorted(allowed))})")
    check_field_types(GeneratorConfig, recipe.model, "model.", src)
    for key, value in recipe.losses.items():
        if key not in GENERATOR_LOSS_KEYS:
            raise ConfigError(
                f"{src}: unknown key 'losses.{key}' (known in generator mode: {', '.join(GENERATOR_LOSS_KEYS)})"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{src}: 'losses.{key}' must be a number in [0, 1], got {value!r}")
    if recipe.data.train is None:
        raise ConfigError(f"{src}: 'data.train' is not set (a folder written by titok pretokenize)")
