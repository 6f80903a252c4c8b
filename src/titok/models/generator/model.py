"""The class-conditional MaskGIT generator over 1D token sequences, as published with TiTok.

Vocabulary (C = tokenizer codebook size, N = number of classes):

* ``[0, C)``: image codes;
* ``C``: the mask token;
* ``C + 1 + y``: the token of class ``y``;
* ``C + N + 1``: the "no class" token (unconditional / dropped label).

The class token is prepended to the K image tokens; the model predicts logits over the C codes at
the K image positions. :class:`Generator` holds what every architecture shares (vocabulary,
forward, sampling, files); each architecture is a subclass in its own module (``bert.py``,
``uvit.py``) and :meth:`Generator.from_config` picks the one of ``config.arch``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from titok.errors import ConfigError, TitokError
from titok.loading.generators import drop_derived_buffers, find_generator
from titok.loading.weights import load_strict, read_state_dict, save_model
from titok.models.autocast_linears import LowPrecisionLinears
from titok.models.generator.config import GeneratorConfig
from titok.models.generator.presets import get_generator_preset
from titok.models.prefixes import check_num_tokens
from titok.precision import precision
from titok.sampling import StepCallback, confidence_decode


class Generator(nn.Module):
    """Class-conditional MaskGIT generator: the base of :class:`~titok.models.generator.bert.BertGenerator`
    and :class:`~titok.models.generator.uvit.UViTGenerator`.

    Build one with :meth:`from_config` or :meth:`from_preset` (random weights) or
    :meth:`from_pretrained` (published or saved weights).
    """

    config: GeneratorConfig
    #: The architecture a subclass implements (its ``config.arch``).
    arch: ClassVar[str]
    #: ``arch`` -> subclass; a subclass registers itself with ``class X(Generator, arch="...")``.
    _architectures: ClassVar[dict[str, type[Generator]]] = {}

    def __init_subclass__(cls, arch: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if arch is not None:
            cls.arch = arch
            Generator._architectures[arch] = cls

    def __init__(self, config: GeneratorConfig) -> None:
        if type(self) is Generator:
            raise TypeError(
                "Generator is the base of the architectures: build one with Generator.from_config(config)"
            )
        if config.arch != self.arch:
            raise ConfigError(f"{type(self).__name__} needs arch {self.arch!r}, got {config.arch!r}")
        super().__init__()
        self.config = config
        #: bfloat16 copies of the Linears for ``generate``, kept while the weights are unchanged
        self.low_precision_linears = LowPrecisionLinears()

    # -- architecture hooks -------------------------------------------------------------------------

    def code_head(self) -> nn.Linear:
        """The Linear(hidden, C) from final hidden states to code logits."""
        raise NotImplementedError

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, K+1, H] of full input ids [B, K+1] (class token first)."""
        raise NotImplementedError

    # -- vocabulary ---------------------------------------------------------------------------------

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def no_class_token_id(self) -> int:
        return self.config.no_class_token_id

    def class_tokens(
        self, labels: torch.Tensor | None, batch_size: int, drop_prob: float = 0.0
    ) -> torch.Tensor:
        """Condition tokens [B] for labels [B] (None: all "no class"), dropping each with ``drop_prob``."""
        device = self.code_head().weight.device
        if labels is None:
            return torch.full((batch_size,), self.no_class_token_id, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (batch_size,):
            raise TitokError(f"labels must have shape [{batch_size}], got {list(labels.shape)}")
        tokens = labels.long() + (self.config.codebook_size + 1)
        if drop_prob > 0:
            dropped = torch.rand(batch_size, device=device) < drop_prob
            tokens = tokens.masked_fill(dropped, self.no_class_token_id)
        return tokens

    # -- forward ------------------------------------------------------------------------------------

    def forward(
        self, tokens: torch.Tensor, labels: torch.Tensor | None = None, label_drop_prob: float | None = None
    ) -> torch.Tensor:
        """Code logits at every image position.

        Args:
            tokens: LongTensor [B, K], codes with ``mask_token_id`` at masked positions.
            labels: LongTensor [B] of class ids, or None for the unconditional model.
            label_drop_prob: in training mode, probability of replacing a label by "no class"
                (default ``config.class_label_dropout``); never applied in eval mode.

        Returns:
            FloatTensor [B, K, C].
        """
        self._check_tokens(tokens)
        drop = self.config.class_label_dropout if label_drop_prob is None else label_drop_prob
        cls = self.class_tokens(labels, tokens.shape[0], drop if self.training else 0.0)
        return self.code_head()(self._image_states(cls, tokens))

    def masked_logits(
        self, tokens: torch.Tensor, class_tokens: torch.Tensor, where: torch.Tensor
    ) -> torch.Tensor:
        """Code logits [N, C] only at positions ``where`` [B, K] (N = where.sum(), row-major order).

        Args:
            tokens: LongTensor [B, K] with mask tokens.
            class_tokens: LongTensor [B] of condition tokens (see :meth:`class_tokens`).
            where: BoolTensor [B, K].
        """
        return self.code_head()(self._image_states(class_tokens, tokens)[where])

    def _image_states(self, class_tokens: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, k, H] of the image positions: the network reads the class token (and,
        with ``config.length_token``, the token of the length k) before the k image tokens."""
        condition = [class_tokens[:, None]]
        if self.config.length_token:
            length = self.config.length_token_id(tokens.shape[1])
            condition.append(torch.full_like(class_tokens[:, None], length))
        ids = torch.cat([*condition, tokens], dim=1)
        return self.hidden_states(ids)[:, len(condition) :]

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        k = self.config.seq_len
        if self.config.variable_length:
            if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= k:
                raise TitokError(
                    f"tokens must have shape [batch, k] with 1 <= k <= {k}, got {list(tokens.shape)}"
                )
        elif tokens.ndim != 2 or tokens.shape[1] != k:
            raise TitokError(
                f"tokens must have shape [batch, {k}] (the generator's sequence length), got {list(tokens.shape)}"
            )

    # -- sampling -----------------------------------------------------------------------------------

    def generate(
        self,
        labels: torch.Tensor | Sequence[int | str] | None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        randomize_temperature: float | None = None,
        softmax_temperature_annealing: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        guidance_power: float | None = None,
        on_step: StepCallback | None = None,
        num_samples: int | None = None,
        dtype: torch.dtype | None = None,
        num_tokens: int | None = None,
    ) -> torch.Tensor:
        """Sample token sequences for class labels by iterative confidence-based decoding.

        Settings left None take the config's defaults (the published ones for published models);
        see :mod:`titok.sampling` for their meaning. Guidance follows the authors: scale 0 is the
        plain conditional model (one pass per step), a scale above 0 mixes in the unconditional
        ("no class") pass; ``labels=None`` samples the unconditional model itself.

        Precision follows :mod:`titok.precision`, as for ``TiTok.encode``: ``dtype=torch.bfloat16``
        autocasts the model's matrix products to bfloat16, ``torch.float32`` forces full
        precision, None follows the caller's autocast. Under autocast the Linear weights are
        cast once, not at every step, and the copies are kept for later calls while the weights
        stay unchanged (``self.low_precision_linears``; in bfloat16 on an AVX-512 CPU, in
        oneDNN's packed layout); the logits come out in bfloat16 and the sampler adds its Gumbel
        noise and ranks confidences in float32.

        Args:
            labels: class ids [B] in ``[0, num_classes)`` or class names (``"golf ball"``, see
                :meth:`class_list`), or None for ``num_samples``
                unconditional samples (every sequence gets the "no class" token; guidance
                settings are then ignored, as they would mix the model with itself).
            num_steps: decoding steps (>= 1).
            guidance_scale: classifier-free guidance scale (>= 0).
            guidance_schedule: ``constant``, ``linear`` or ``power-cosine``.
            randomize_temperature: initial Gumbel temperature (>= 0).
            softmax_temperature_annealing: divide logits by ``0.5 + 0.8 * (1 - step ratio)``.
            seed: seed of a fresh random generator (same seed, same tokens).
            generator: random generator to use instead of ``seed``; with neither, one seeded
                from torch's global generator.
            guidance_power: power of the ``power-cosine`` schedule.
            on_step: called with ``(step, ids [B, K])`` after every step.
            num_samples: number of unconditional samples (only with ``labels=None``).
            dtype: ``torch.bfloat16``, ``torch.float32`` or None (see above).
            num_tokens: sample the first k tokens only (None: all K). A generator trained on
                prefixes (``config.variable_length``) samples a k-token sequence, k/K of the work
                or less; another one samples all K and returns the first k.

        Returns:
            LongTensor [B, k] of codes.
        """
        k_max = self.config.seq_len
        k = k_max if num_tokens is None else check_num_tokens(num_tokens, k_max)
        seq_len = k if self.config.variable_length else k_max
        if labels is None:
            if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
                raise TitokError(
                    f"unconditional sampling (labels=None) needs num_samples >= 1, got {num_samples!r}"
                )
            guidance_scale, guidance_schedule = 0.0, "constant"
        elif num_samples is not None:
            raise TitokError("num_samples is only for unconditional sampling (labels=None)")
        settings = self.config.sampling_settings(
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
            guidance_power=guidance_power,
            randomize_temperature=randomize_temperature,
            softmax_temperature_annealing=softmax_temperature_annealing,
        )
        device = self.code_head().weight.device
        if labels is None:
            assert num_samples is not None
            class_tokens = self.class_tokens(None, num_samples)
        else:
            checked = self._check_labels(labels, device)
            class_tokens = self.class_tokens(checked, checked.shape[0])
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed if seed is not None else int(torch.randint(2**62, ()).item()))
        was_training = self.training
        self.eval()
        try:
            with (
                precision(device.type, dtype),
                torch.inference_mode(),
                self.low_precision_linears.active(self, device.type),
            ):
                tokens = confidence_decode(
                    self.masked_logits,
                    class_tokens,
                    self.no_class_token_id,
                    seq_len,
                    self.mask_token_id,
                    settings,
                    generator=generator,
                    on_step=on_step,
                )
        finally:
            self.train(was_training)
        return tokens[:, :k].clone()  # a normal tensor, usable outside inference mode

    def class_list(self) -> list[str]:
        """Class names in label order: the config's own, else ImageNet-1k's (1000 classes), else the ids."""
        from titok.class_names import imagenet_classes

        if self.config.class_names:
            return list(self.config.class_names)
        if self.config.num_classes == 1000:
            return imagenet_classes()
        return [str(i) for i in range(self.config.num_classes)]

    def _check_labels(self, labels: torch.Tensor | Sequence[int | str], device: torch.device) -> torch.Tensor:
        if isinstance(labels, str):
            labels = [labels]
        if not isinstance(labels, torch.Tensor) and any(isinstance(x, str) for x in labels):
            from titok.class_names import resolve_class

            names = self.class_list()
            labels = [resolve_class(x, names) for x in labels]
        try:
            labels = torch.as_tensor(labels, device=device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TitokError(f"labels must be a sequence of class ids, got {labels!r}") from exc
        if labels.ndim != 1 or labels.numel() == 0:
            raise TitokError(
                f"labels must be a non-empty 1-D sequence of class ids, got shape {list(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TitokError(f"labels must be integer class ids, got dtype {labels.dtype}")
        n = self.config.num_classes
        bad = labels[(labels < 0) | (labels >= n)]
        if bad.numel():
            raise TitokError(f"class label {int(bad[0])} out of range: this generator has classes 0..{n - 1}")
        return labels.long()

    # -- construction and files ---------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: GeneratorConfig) -> Generator:
        """A randomly initialised generator of ``config.arch``: the one place an architecture is chosen."""
        if not isinstance(config, GeneratorConfig):
            raise TypeError(f"Generator.from_config needs a GeneratorConfig, got {type(config).__name__}")
        return Generator._architectures[config.arch](config)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Generator:
        """A randomly initialised generator of preset ``name``, with config fields overridden."""
        config = dataclasses.replace(get_generator_preset(name).config)
        if overrides:
            config = GeneratorConfig.from_dict({**config.to_dict(), **overrides})
        return cls.from_config(config)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], preset: str | None = None, raw: bool = False
    ) -> Generator:
        """Load weights strictly, in eval mode, on the CPU.

        Args:
            name_or_path: one of

                * a published preset name (``titok-l32``, ``titok-b64``, ``titok-s128``): the hub
                  repo ``yucornetto/generator_titok_*_imagenet`` (or, with ``raw=True``, the raw
                  ``generator_titok_*.bin`` of ``fun-research/TiTok``);
                * a built-in generator's name (``imagenette64``);
                * a local folder: our ``config.json`` + ``model.safetensors`` (``save_pretrained``) or
                  the authors' (``config.json`` with ``model.generator`` and ``model.vq_model``);
                * a local weights file (``.safetensors``/``.bin``), with ``preset`` giving the
                  architecture (inferred from names like ``generator_titok_l32.bin``);
                * a hub repo id (``owner/name``) in either folder format, or a hub file
                  ``owner/name/file.bin``.
            preset: architecture of a bare weights file.
            raw: for a published preset, read the authors' raw state-dict file instead.

        Where the files are found: :func:`titok.loading.generators.find_generator`.
        """
        files = find_generator(name_or_path, preset=preset, raw=raw)
        return generator_from_state_dict(files.config, read_state_dict(files.weights), files.source)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (created if needed)."""
        return save_model(self, directory, kind="generator", config=self.config.to_dict())


def load_generator(
    name_or_path: str | os.PathLike[str], preset: str | None = None, raw: bool = False
) -> Generator:
    """Load a generator strictly (see :meth:`Generator.from_pretrained`); float32, eval mode, CPU."""
    return Generator.from_pretrained(name_or_path, preset=preset, raw=raw)


def generator_from_state_dict(
    config: GeneratorConfig, state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> Generator:
    """Build a generator for ``config`` around ``state`` (used in place, no copy), strictly; eval mode.

    ``source`` names the weights in error messages. Index buffers that older BERT checkpoints
    store (``model.embeddings.position_ids``, ``token_type_ids``) are accepted if they hold the
    default indices, and dropped.
    """
    state = drop_derived_buffers(config, dict(state), source)
    with torch.device("meta"):
        model = Generator.from_config(config)
    load_strict(model, state, source)
    return model.float().eval()
