"""Class-conditional MaskGIT generators over 1D token sequences, as published with TiTok.

Vocabulary (C = tokenizer codebook size, N = number of classes):

* ``[0, C)``: image codes;
* ``C``: the mask token;
* ``C + 1 + y``: the token of class ``y``;
* ``C + N + 1``: the "no class" token (unconditional / dropped label).

The class token is prepended to the K image tokens; the model predicts logits over the C codes at
the K image positions.

Two architectures, each with the exact parameter names of the authors' checkpoints:

* ``"bert"`` (their ``ImageBert``, L-32 and B-64): a BERT encoder under ``model.*`` (word, position
  and token-type embeddings, post-norm layers, LayerNorm eps 1e-12) and ``model.lm_head``;
* ``"uvit"`` (their ``UViTBert``, S-128): pre-norm blocks with long skip connections
  (``in_blocks``, ``mid_block``, ``out_blocks``), ``norm`` and ``lm_head``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from titok import hub
from titok.checkpoints import load_strict, read_state_dict
from titok.errors import CheckpointError, ConfigError, TitokError
from titok.sampling import SamplingSettings, StepCallback, confidence_decode

ARCHITECTURES = ("bert", "uvit")
FORMAT_VERSION = 1
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: Hub repo holding the authors' raw state-dict files.
RAW_REPO = "fun-research/TiTok"


@dataclass
class GeneratorConfig:
    """Architecture, vocabulary and sampling defaults of a generator.

    Attributes:
        arch: ``"bert"`` (post-norm BERT) or ``"uvit"`` (pre-norm blocks with long skips).
        hidden_size: transformer width.
        depth: ``"bert"``: number of layers; ``"uvit"``: ``depth // 2`` in-blocks, one middle
            block and ``depth // 2`` out-blocks.
        heads: attention heads (divides ``hidden_size``).
        intermediate_size: MLP hidden width.
        dropout: dropout on residual branches and embeddings (training only).
        attn_dropout: dropout on attention probabilities (training only).
        codebook_size: C, number of image codes of the tokenizer.
        seq_len: K, image tokens per sequence.
        num_classes: N, number of class labels.
        class_label_dropout: probability of replacing a label by "no class" in training.
        num_steps: default number of decoding steps.
        guidance_scale: default classifier-free guidance scale.
        guidance_schedule: default guidance schedule (``constant``, ``linear``, ``power-cosine``).
        guidance_power: power of the ``power-cosine`` schedule.
        randomize_temperature: default Gumbel temperature at the first step.
        class_names: the model's own class list in label order (None: ImageNet-1k's for 1000
            classes, else the ids), used to turn class names into labels.
        tokenizer: name or path of the tokenizer whose tokens the model generates (what
            ``titok generate`` decodes with when no ``--tokenizer`` is given).
    """

    arch: str = "bert"
    hidden_size: int = 768
    depth: int = 24
    heads: int = 16
    intermediate_size: int = 3072
    dropout: float = 0.1
    attn_dropout: float = 0.1
    codebook_size: int = 4096
    seq_len: int = 32
    num_classes: int = 1000
    class_label_dropout: float = 0.1
    num_steps: int = 8
    guidance_scale: float = 4.5
    guidance_schedule: str = "linear"
    guidance_power: float = 3.0
    randomize_temperature: float = 9.5
    class_names: list[str] | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"generator config: {f.name} must be an integer, got {value!r}")
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"generator config: {f.name} must be a number, got {value!r}")
                setattr(self, f.name, float(value))
        if self.arch not in ARCHITECTURES:
            raise ConfigError(
                f"generator config: arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}"
            )
        for name in ("hidden_size", "depth", "heads", "intermediate_size", "codebook_size", "seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"generator config: {name} must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 0:
            raise ConfigError(f"generator config: num_classes must be >= 0, got {self.num_classes}")
        if self.hidden_size % self.heads:
            raise ConfigError(
                f"generator config: hidden_size {self.hidden_size} is not divisible by heads {self.heads}"
            )
        for name in ("dropout", "attn_dropout", "class_label_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"generator config: {name} must be in [0, 1], got {getattr(self, name)}")
        try:
            self.sampling_settings()
        except TitokError as exc:
            raise ConfigError(f"generator config: {exc}") from exc
        self._check_names()

    def _check_names(self) -> None:
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer.strip()):
            raise ConfigError(
                f"generator config: tokenizer must be a non-empty string, got {self.tokenizer!r}"
            )
        if self.class_names is None:
            return
        names = self.class_names
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError("generator config: class_names must be a list of non-empty strings")
        if len(names) != self.num_classes:
            raise ConfigError(
                f"generator config: class_names has {len(names)} names but num_classes is {self.num_classes}"
            )
        self.class_names = list(names)

    @property
    def mask_token_id(self) -> int:
        """Id of the mask token (= ``codebook_size``)."""
        return self.codebook_size

    @property
    def no_class_token_id(self) -> int:
        """Id of the "no class" token."""
        return self.codebook_size + self.num_classes + 1

    @property
    def vocab_size(self) -> int:
        """Codes, mask token, class tokens and the "no class" token."""
        return self.codebook_size + self.num_classes + 2

    def sampling_settings(self, **overrides: Any) -> SamplingSettings:
        """The default :class:`SamplingSettings`, with ``overrides`` that are not None applied."""
        settings = {
            "num_steps": self.num_steps,
            "guidance_scale": self.guidance_scale,
            "guidance_schedule": self.guidance_schedule,
            "guidance_power": self.guidance_power,
            "randomize_temperature": self.randomize_temperature,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingSettings(**settings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeneratorConfig:
        """Build from a dict of field values; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"generator config: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**dict(data))

    @classmethod
    def from_official(cls, generator: Mapping[str, Any], codebook_size: int) -> GeneratorConfig:
        """Convert the authors' ``model.generator`` section (plus ``model.vq_model.codebook_size``).

        Their U-ViT blocks have no dropout whatever the config says, so ``"uvit"`` gets 0.
        """
        model_type = generator.get("model_type", "ViT")
        arch = {"vit": "bert", "uvit": "uvit"}.get(str(model_type).lower())
        if arch is None:
            raise ConfigError(f"model.generator.model_type: expected 'ViT' or 'UViT', got {model_type!r}")
        required = (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "image_seq_len",
            "condition_num_classes",
        )
        missing = [k for k in required if k not in generator]
        if missing:
            raise ConfigError(f"model.generator: missing {', '.join(missing)}")
        schedule = generator.get("guidance_decay", "constant")
        if isinstance(schedule, bool):  # early configs: True meant the linear ramp
            schedule = "linear" if schedule else "constant"
        defaults = cls()
        return cls(
            arch=arch,
            hidden_size=generator["hidden_size"],
            depth=generator["num_hidden_layers"],
            heads=generator["num_attention_heads"],
            intermediate_size=generator["intermediate_size"],
            dropout=generator.get("dropout", 0.1) if arch == "bert" else 0.0,
            attn_dropout=generator.get("attn_drop", 0.1) if arch == "bert" else 0.0,
            codebook_size=codebook_size,
            seq_len=generator["image_seq_len"],
            num_classes=generator["condition_num_classes"],
            class_label_dropout=generator.get("class_label_dropout", 0.1),
            num_steps=generator.get("num_steps", defaults.num_steps),
            guidance_scale=generator.get("guidance_scale", defaults.guidance_scale),
            guidance_schedule=schedule,
            guidance_power=generator.get("guidance_scale_pow", defaults.guidance_power),
            randomize_temperature=generator.get("randomize_temperature", defaults.randomize_temperature),
        )


@dataclass(frozen=True)
class GeneratorPreset:
    """A named generator architecture, and for published ones where the weights live.

    Attributes:
        name: preset name (``titok-l32``).
        description: one line for listings.
        config: the architecture and sampling defaults.
        hub_repo: hub repo with the authors' ``config.json`` + ``model.safetensors``.
        raw_file: the authors' raw state-dict file in :data:`RAW_REPO`, if any.
    """

    name: str
    description: str
    config: GeneratorConfig
    hub_repo: str | None = None
    raw_file: str | None = None


def _published(k: int, **kw: Any) -> GeneratorConfig:
    return GeneratorConfig(seq_len=k, **kw)


GENERATOR_PRESETS: dict[str, GeneratorPreset] = {
    p.name: p
    for p in (
        GeneratorPreset(
            "titok-l32",
            "published MaskGIT generator for TiTok-L-32 (BERT 768x24, 177M)",
            _published(
                32, num_steps=8, guidance_scale=4.5, guidance_schedule="linear", randomize_temperature=9.5
            ),
            hub_repo="yucornetto/generator_titok_l32_imagenet",
            raw_file="generator_titok_l32.bin",
        ),
        GeneratorPreset(
            "titok-b64",
            "published MaskGIT generator for TiTok-B-64 (BERT 768x24, 177M)",
            _published(
                64, num_steps=8, guidance_scale=3.0, guidance_schedule="linear", randomize_temperature=11.0
            ),
            hub_repo="yucornetto/generator_titok_b64_imagenet",
            raw_file="generator_titok_b64.bin",
        ),
        GeneratorPreset(
            "titok-s128",
            "published MaskGIT generator for TiTok-S-128 (U-ViT 1024x20, 295M)",
            _published(
                128,
                arch="uvit",
                hidden_size=1024,
                depth=20,
                heads=16,
                intermediate_size=4096,
                dropout=0.0,
                attn_dropout=0.0,
                num_steps=64,
                guidance_scale=6.9,
                guidance_schedule="power-cosine",
                guidance_power=3.0,
                randomize_temperature=2.8,
            ),
            hub_repo="yucornetto/generator_titok_s128_imagenet",
        ),
        GeneratorPreset(
            "tiny",
            "CPU-sized BERT generator (128 wide, 2 layers) for tests and small experiments",
            GeneratorConfig(
                hidden_size=128,
                depth=2,
                heads=4,
                intermediate_size=512,
                guidance_scale=3.0,
                randomize_temperature=4.5,
            ),
        ),
        GeneratorPreset(
            "tiny-uvit",
            "CPU-sized U-ViT generator (128 wide, 3 blocks) for tests and small experiments",
            GeneratorConfig(
                arch="uvit",
                hidden_size=128,
                depth=2,
                heads=4,
                intermediate_size=512,
                dropout=0.0,
                attn_dropout=0.0,
                guidance_scale=3.0,
                randomize_temperature=4.5,
            ),
        ),
        GeneratorPreset(
            "small",
            "CPU-sized BERT generator (256 wide, 4 layers) for small-scale training",
            GeneratorConfig(
                hidden_size=256,
                depth=4,
                heads=4,
                intermediate_size=1024,
                guidance_scale=3.0,
                randomize_temperature=4.5,
            ),
        ),
    )
}


def _normalize_preset_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    return key.removeprefix("generator-")


def generator_presets() -> list[str]:
    """Names of all generator presets."""
    return list(GENERATOR_PRESETS)


def get_generator_preset(name: str) -> GeneratorPreset:
    """The preset called ``name`` (case and ``_``/``-`` insensitive); ConfigError lists close names."""
    key = _normalize_preset_name(name)
    if key in GENERATOR_PRESETS:
        return GENERATOR_PRESETS[key]
    close = difflib.get_close_matches(key, GENERATOR_PRESETS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown generator preset {name!r} (presets: {', '.join(GENERATOR_PRESETS)}).{hint}")


# --------------------------------------------------------------------------------------------------
# BERT ("bert"): names as in Hugging Face's BertModel without pooler, under ``model.``.


class _BertEmbeddings(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.seq_len + 1, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(2, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] -> [B, L, H]; every token has token type 0."""
        length = ids.shape[1]
        position_and_type = self.position_embeddings.weight[:length] + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(self.word_embeddings(ids) + position_and_type))


class _BertSelfAttention(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.heads = config.heads
        self.attn_dropout = config.attn_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H] -> attention context [B, L, H]."""
        b, length, width = x.shape
        shape = (b, length, self.heads, width // self.heads)
        q = self.query(x).view(shape).transpose(1, 2)
        k = self.key(x).view(shape).transpose(1, 2)
        v = self.value(x).view(shape).transpose(1, 2)
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return out.transpose(1, 2).reshape(b, length, width)


class _BertResidualOutput(nn.Module):
    """``LayerNorm(dropout(dense(x)) + residual)``."""

    def __init__(self, in_features: int, hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _BertAttention(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.self = _BertSelfAttention(config)
        self.output = _BertResidualOutput(config.hidden_size, config.hidden_size, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x), x)


class _BertIntermediate(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _BertLayer(nn.Module):
    """Post-norm transformer layer: attention, then GELU MLP, each followed by LayerNorm(x + f(x))."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.attention = _BertAttention(config)
        self.intermediate = _BertIntermediate(config)
        self.output = _BertResidualOutput(config.intermediate_size, config.hidden_size, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        return self.output(self.intermediate(x), x)


class _BertEncoder(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(config) for _ in range(config.depth))


class _BertBackbone(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.embeddings = _BertEmbeddings(config)
        self.encoder = _BertEncoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.codebook_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x)
        return x


# --------------------------------------------------------------------------------------------------
# U-ViT ("uvit"): pre-norm blocks with long skip connections.


class _UViTAttention(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.heads = config.heads
        self.attn_dropout = config.attn_dropout
        self.proj_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, H] -> [B, L, H]; the fused projection is laid out (3, heads, head_dim)."""
        b, length, width = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, length, width)))


class _UViTMlp(nn.Module):
    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class _UViTBlock(nn.Module):
    """``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``, after ``skip_linear(cat[x, skip])`` if skipping."""

    def __init__(self, config: GeneratorConfig, skip: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size)
        self.attn = _UViTAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size)
        self.mlp = _UViTMlp(config)
        self.skip_linear = nn.Linear(2 * config.hidden_size, config.hidden_size) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            assert skip is not None
            x = self.skip_linear(torch.cat([x, skip], dim=-1))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


# --------------------------------------------------------------------------------------------------
# Generators.


class Generator(nn.Module):
    """Class-conditional MaskGIT generator (base of :class:`BertGenerator` and :class:`UViTGenerator`).

    ``Generator(config)`` builds the subclass matching ``config.arch``. Construct with
    :meth:`from_preset` (random weights) or :meth:`from_pretrained` (published or saved weights).
    """

    config: GeneratorConfig

    def __new__(cls, config: GeneratorConfig | None = None, *args: Any, **kwargs: Any) -> Generator:
        if cls is Generator:
            if not isinstance(config, GeneratorConfig):
                raise TypeError("Generator(config) needs a GeneratorConfig")
            cls = BertGenerator if config.arch == "bert" else UViTGenerator
        return super().__new__(cls)

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config

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
        ids = torch.cat([cls[:, None], tokens], dim=1)
        return self.code_head()(self.hidden_states(ids)[:, 1:])

    def masked_logits(
        self, tokens: torch.Tensor, class_tokens: torch.Tensor, where: torch.Tensor
    ) -> torch.Tensor:
        """Code logits [N, C] only at positions ``where`` [B, K] (N = where.sum(), row-major order).

        Args:
            tokens: LongTensor [B, K] with mask tokens.
            class_tokens: LongTensor [B] of condition tokens (see :meth:`class_tokens`).
            where: BoolTensor [B, K].
        """
        ids = torch.cat([class_tokens[:, None], tokens], dim=1)
        return self.code_head()(self.hidden_states(ids)[:, 1:][where])

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 2 or tokens.shape[1] != self.config.seq_len:
            raise TitokError(
                f"tokens must have shape [batch, {self.config.seq_len}] (the generator's sequence length), "
                f"got {list(tokens.shape)}"
            )

    # -- sampling -----------------------------------------------------------------------------------

    def generate(
        self,
        labels: torch.Tensor | Sequence[int] | None,
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
    ) -> torch.Tensor:
        """Sample token sequences for class labels by iterative confidence-based decoding.

        Settings left None take the config's defaults (the published ones for published models);
        see :mod:`titok.sampling` for their meaning. Guidance follows the authors: scale 0 is the
        plain conditional model (one pass per step), a scale above 0 mixes in the unconditional
        ("no class") pass; ``labels=None`` samples the unconditional model itself.

        Args:
            labels: class ids [B] in ``[0, num_classes)``, or None for ``num_samples``
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

        Returns:
            LongTensor [B, K] of codes.
        """
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
            with torch.inference_mode():
                tokens = confidence_decode(
                    self.masked_logits,
                    class_tokens,
                    self.no_class_token_id,
                    self.config.seq_len,
                    self.mask_token_id,
                    settings,
                    generator=generator,
                    on_step=on_step,
                )
        finally:
            self.train(was_training)
        return tokens.clone()  # a normal tensor, usable outside inference mode

    def _check_labels(self, labels: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
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
        """A randomly initialised generator of ``config.arch``."""
        return Generator(config)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Generator:
        """A randomly initialised generator of preset ``name``, with config fields overridden."""
        config = dataclasses.replace(get_generator_preset(name).config)
        if overrides:
            config = GeneratorConfig.from_dict({**config.to_dict(), **overrides})
        return Generator(config)

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
                * a local folder: our ``config.json`` + ``model.safetensors`` (``save_pretrained``) or
                  the authors' (``config.json`` with ``model.generator`` and ``model.vq_model``);
                * a local weights file (``.safetensors``/``.bin``), with ``preset`` giving the
                  architecture (inferred from names like ``generator_titok_l32.bin``);
                * a hub repo id (``owner/name``) in either folder format, or a hub file
                  ``owner/name/file.bin``.
            preset: architecture of a bare weights file.
            raw: for a published preset, read the authors' raw state-dict file instead.
        """
        return load_generator(name_or_path, preset=preset, raw=raw)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "library": "titok",
            "kind": "generator",
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
        return directory


class BertGenerator(Generator):
    """The authors' ``ImageBert``: a BERT encoder (``model.*``) with ``model.lm_head``."""

    def __init__(self, config: GeneratorConfig) -> None:
        if config.arch != "bert":
            raise ConfigError(f"BertGenerator needs arch 'bert', got {config.arch!r}")
        super().__init__(config)
        self.model = _BertBackbone(config)
        self.apply(_init_bert)

    def code_head(self) -> nn.Linear:
        return self.model.lm_head

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)


class UViTGenerator(Generator):
    """The authors' ``UViTBert``: embeddings, ``depth // 2`` in-blocks, a middle block, ``depth // 2``
    out-blocks taking the in-blocks' outputs in reverse order, final LayerNorm and ``lm_head``."""

    def __init__(self, config: GeneratorConfig) -> None:
        if config.arch != "uvit":
            raise ConfigError(f"UViTGenerator needs arch 'uvit', got {config.arch!r}")
        super().__init__(config)
        half = config.depth // 2
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.seq_len + 1, config.hidden_size))
        self.in_blocks = nn.ModuleList(_UViTBlock(config) for _ in range(half))
        self.mid_block = _UViTBlock(config)
        self.out_blocks = nn.ModuleList(_UViTBlock(config, skip=True) for _ in range(half))
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.codebook_size)
        self.apply(_init_uvit)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def code_head(self) -> nn.Linear:
        return self.lm_head

    def hidden_states(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids) + self.pos_embed[:, : ids.shape[1]]
        skips = []
        for block in self.in_blocks:
            x = block(x)
            skips.append(x)
        x = self.mid_block(x)
        for block in self.out_blocks:
            x = block(x, skips.pop())
        return self.norm(x)


def _init_bert(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _init_uvit(m: nn.Module) -> None:
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------
# Loading.

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_RAW_NAME = re.compile(r"generator[_-]titok[_-](l32|b64|s128)", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\{([\w.]+)\}")


def load_generator(
    name_or_path: str | os.PathLike[str], preset: str | None = None, raw: bool = False
) -> Generator:
    """Load a generator strictly (see :meth:`Generator.from_pretrained`); float32, eval mode, CPU."""
    path = Path(name_or_path)
    if path.is_dir():
        return _load_folder(path, preset)
    if path.is_file():
        return _load_weights_file(path, preset, str(path))
    name = str(name_or_path)
    from titok.pretrained import builtin_generators_dir

    builtin = builtin_generators_dir() / name
    if "/" not in name and builtin.is_dir():
        return _load_folder(builtin, preset)
    key = _normalize_preset_name(name)
    if key in GENERATOR_PRESETS:
        return _load_published(GENERATOR_PRESETS[key], raw)
    local_looking = name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name
    if not local_looking and name.endswith(WEIGHT_SUFFIXES) and name.count("/") >= 2:
        owner, repo, filename = name.split("/", 2)
        weights = hub.download(f"{owner}/{repo}", filename)
        return _load_weights_file(weights, preset, name)
    if not local_looking and name.count("/") == 1:
        return _load_hub_repo(name)
    if local_looking or "/" in name or name.endswith(WEIGHT_SUFFIXES):
        raise CheckpointError(f"{name}: no such file or folder")
    published = [n for n, p in GENERATOR_PRESETS.items() if p.hub_repo]
    raise CheckpointError(
        f"unknown generator {name!r}: not a local path, published preset ({', '.join(published)}) or hub repo id"
    )


def generator_config_from_json(path: Path) -> GeneratorConfig:
    """Read a generator config from our ``config.json`` or the authors' (``model.generator``)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON config ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    try:
        if data.get("library") == "titok":
            if data.get("kind") != "generator":
                raise CheckpointError(f"{path}: holds a {data.get('kind')!r}, not a generator")
            return GeneratorConfig.from_dict(data.get("config", {}))
        model = data.get("model")
        if isinstance(model, dict) and isinstance(model.get("generator"), dict):
            generator = {
                k: _resolve_reference(v, data, f"model.generator.{k}") for k, v in model["generator"].items()
            }
            vq = model.get("vq_model") or {}
            if "codebook_size" not in vq:
                raise ConfigError("model.vq_model.codebook_size is missing")
            codebook = _resolve_reference(vq["codebook_size"], data, "model.vq_model.codebook_size")
            return GeneratorConfig.from_official(generator, codebook)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    raise CheckpointError(f"{path}: not a generator config (no 'library: titok' nor 'model.generator')")


def _resolve_reference(value: Any, root: Mapping[str, Any], field: str) -> Any:
    """Follow an unresolved ``${a.b.c}`` reference of the authors' saved configs."""
    if not isinstance(value, str):
        return value
    match = _REFERENCE.fullmatch(value.strip())
    if match is None:
        return value
    node: Any = root
    for part in match.group(1).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{field}: reference {value} points nowhere")
        node = node[part]
    return node


def generator_from_state_dict(
    config: GeneratorConfig, state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> Generator:
    """Build a generator for ``config`` around ``state`` (used in place, no copy), strictly; eval mode.

    ``source`` names the weights in error messages. Index buffers that older BERT checkpoints
    store (``model.embeddings.position_ids``, ``token_type_ids``) are accepted if they hold the
    default indices, and dropped.
    """
    state = _drop_derived_buffers(config, dict(state), source)
    with torch.device("meta"):
        model = Generator(config)
    load_strict(model, state, source)
    return model.float().eval()


def _drop_derived_buffers(
    config: GeneratorConfig, state: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Remove the index buffers older BERT checkpoints store, after checking they hold the defaults."""
    expected = {
        "model.embeddings.position_ids": torch.arange(config.seq_len + 1)[None],
        "model.embeddings.token_type_ids": torch.zeros(1, config.seq_len + 1, dtype=torch.long),
    }
    if config.arch != "bert" or not any(name in state for name in expected):
        return state
    state = dict(state)
    for name, default in expected.items():
        if name in state:
            got = state.pop(name)
            if got.shape != default.shape or not torch.equal(got.long(), default):
                raise CheckpointError(
                    f"{source}: {name} does not hold the default indices {list(default.shape)}"
                )
    return state


def _weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no weights file ({' or '.join(WEIGHT_FILES)})")


def _load_folder(folder: Path, preset: str | None) -> Generator:
    weights = _weights_in(folder)
    if (folder / "config.json").is_file():
        config = generator_config_from_json(folder / "config.json")
    elif preset is not None:
        config = dataclasses.replace(get_generator_preset(preset).config)
    else:
        raise CheckpointError(f"{folder}: no config.json; pass the preset that gives the architecture")
    return generator_from_state_dict(config, read_state_dict(weights), str(weights))


def _load_weights_file(path: Path, preset: str | None, source: str) -> Generator:
    if preset is None:
        match = _RAW_NAME.search(Path(source).name)
        if match is None:
            raise CheckpointError(
                f"{source}: a bare weights file needs a preset for its architecture "
                f"(e.g. preset='titok-l32'; presets: {', '.join(GENERATOR_PRESETS)})"
            )
        preset = f"titok-{match.group(1).lower()}"
    config = dataclasses.replace(get_generator_preset(preset).config)
    return generator_from_state_dict(config, read_state_dict(path), source)


def _hub_repo_files(repo_id: str) -> tuple[Path, Path, str]:
    """Download (or find cached) ``config.json`` and the weights of a hub repo."""
    config_path = hub.download(repo_id, "config.json")
    for name in WEIGHT_FILES:
        cached = hub.cached_or_none(repo_id, name)
        if cached is not None:
            return config_path, cached, f"{repo_id}/{name}"
    return config_path, hub.download(repo_id, WEIGHT_FILES[0]), f"{repo_id}/{WEIGHT_FILES[0]}"


def _load_hub_repo(repo_id: str) -> Generator:
    config_path, weights, source = _hub_repo_files(repo_id)
    return generator_from_state_dict(
        generator_config_from_json(config_path), read_state_dict(weights), source
    )


def _load_published(preset: GeneratorPreset, raw: bool) -> Generator:
    if preset.hub_repo is None:
        raise CheckpointError(
            f"preset {preset.name!r} has no published weights; build it with Generator.from_preset({preset.name!r}) "
            "or load your own checkpoint by path"
        )
    if raw:
        if preset.raw_file is None:
            raise CheckpointError(
                f"{preset.name!r} has no raw state-dict file in {RAW_REPO}; load the hub repo {preset.hub_repo} instead"
            )
        weights = hub.download(RAW_REPO, preset.raw_file)
        return _load_weights_file(weights, preset.name, f"{RAW_REPO}/{preset.raw_file}")
    try:
        config_path, weights, source = _hub_repo_files(preset.hub_repo)
    except CheckpointError as exc:
        if preset.raw_file is None:
            raise
        raise CheckpointError(
            f"{exc} Alternatively download {hub.hub_file_url(RAW_REPO, preset.raw_file)} and load it with "
            f"Generator.from_pretrained(PATH, preset={preset.name!r})."
        ) from exc
    return generator_from_state_dict(
        generator_config_from_json(config_path), read_state_dict(weights), source
    )
