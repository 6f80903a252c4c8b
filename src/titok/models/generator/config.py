"""Generator configuration: architecture, vocabulary and sampling defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from titok.errors import ConfigError, TitokError
from titok.fieldtypes import check_field_types
from titok.sampling import SamplingSettings

ARCHITECTURES = ("bert", "uvit")


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
        variable_length: trained on token prefixes (the recipe's ``prefix`` section): it
            samples the first k tokens directly for any k <= ``seq_len``, at the cost of a
            k-token sequence; without it, a prefix is cut from a full-length sample.
        length_token: (variable-length generators only) also feed a learned token for the
            sequence length k, after the class token, so the network is told k rather than
            left to infer it from the sequence it sees. Off by default (the authors' models and
            every earlier checkpoint); adds ``seq_len`` ids to the vocabulary and one position.
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
    variable_length: bool = False
    length_token: bool = False

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
        if self.length_token and not self.variable_length:
            raise ConfigError(
                "generator config: length_token needs variable_length (a generator trained on token "
                "prefixes, the recipe's prefix.enabled); a fixed-length one always sees seq_len tokens"
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
        """Codes, mask token, class tokens, the "no class" token (and the length tokens)."""
        return self.codebook_size + self.num_classes + 2 + (self.seq_len if self.length_token else 0)

    @property
    def num_condition_ids(self) -> int:
        """Ids before the image tokens in the network's input: the class token (and the length token)."""
        return 2 if self.length_token else 1

    def length_token_id(self, k: int) -> int:
        """Id of the length token for a k-token sequence (1 <= k <= ``seq_len``)."""
        if not self.length_token:
            raise TitokError("this generator has no length tokens (config.length_token is off)")
        if not 1 <= k <= self.seq_len:
            raise TitokError(f"length must be in 1..{self.seq_len}, got {k}")
        return self.codebook_size + self.num_classes + 2 + k - 1

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
        check_field_types(cls, dict(data), "config.", "")
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
