"""The tokenizers of a reproduction run as values: their kind, number of tokens and run folders.

A tokenizer's name is its identity in ``state.json`` and in the results files: ``vqgan-f8`` and
``vqgan-f16`` (2D VQGANs), ``titok-k{K}`` (a two-stage TiTok, trained in the run folders
``titok-k{K}-stage1`` then ``titok-k{K}-stage2``), ``titok-k{K}-single`` (a single-stage TiTok)
and ``titok-k{K}-finetune`` (that single-stage TiTok with its decoder fine-tuned, encoder and
quantizer frozen: the same tokens; the built-in run's, :mod:`titok.reproduce.builtin`).
:class:`TokenizerStage` gives such a name a type, so that the pipeline and the reports ask a
tokenizer for its kind, its token count or its folders instead of taking its name apart;
:func:`tokenizer_catalog` lists the tokenizers of a budget, and :meth:`TokenizerStage.from_name`
reads a recorded name back (the one place where a name is parsed).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from titok.errors import ConfigError
from titok.reproduce.budget import IMAGE_SIZE, Budget

if TYPE_CHECKING:
    from titok.evaluation.reconstruction import Tokenizer


class TokenizerKind(Enum):
    """How a tokenizer is built and trained; the value is its label in the report, and the order
    of the members that of the report's tables and plot lines (:func:`by_kind`)."""

    TITOK_TWO_STAGE = "1D TiTok two-stage"
    TITOK_SINGLE_STAGE = "1D TiTok single-stage"
    VQGAN = "2D VQGAN"


def _grid_tokens(factor: int) -> int:
    """Tokens of a 2D grid that downsamples :data:`IMAGE_SIZE` px by ``factor``."""
    if factor < 1 or IMAGE_SIZE % factor:
        raise ConfigError(f"VQGAN factor {factor} does not divide the image size {IMAGE_SIZE}")
    return (IMAGE_SIZE // factor) ** 2


_NAME = re.compile(
    r"vqgan-f(?P<factor>[1-9]\d*)|titok-k(?P<tokens>[1-9]\d*)(?:(?P<single>-single)|(?P<finetune>-finetune))?"
)


@dataclass(frozen=True)
class TokenizerStage:
    """One tokenizer that a run trains.

    Attributes:
        kind: 2D VQGAN, two-stage TiTok or single-stage TiTok.
        num_tokens: tokens per image (a VQGAN's: its grid at :data:`IMAGE_SIZE` px).
        factor: a VQGAN's downsampling factor (None for a TiTok).
        finetuned: a single-stage TiTok whose decoder was then fine-tuned (encoder, latent
            tokens and quantizer frozen, so its tokens are those of :attr:`base`).
    """

    kind: TokenizerKind
    num_tokens: int
    factor: int | None = None
    finetuned: bool = False

    def __post_init__(self) -> None:
        if (self.kind is TokenizerKind.VQGAN) != (self.factor is not None):
            raise ConfigError(f"{self.kind.value}: a VQGAN has a factor, a TiTok none (got {self.factor})")
        if self.factor is not None and self.num_tokens != _grid_tokens(self.factor):
            raise ConfigError(f"a VQGAN with factor {self.factor} has {_grid_tokens(self.factor)} tokens")
        if self.num_tokens < 1:
            raise ConfigError(f"a tokenizer needs at least one token, got {self.num_tokens}")
        if self.finetuned and self.kind is not TokenizerKind.TITOK_SINGLE_STAGE:
            raise ConfigError(f"{self.kind.value}: only a single-stage TiTok has a decoder fine-tuning stage")

    # ------------------------------------------------------------------ construction
    @classmethod
    def vqgan(cls, factor: int) -> TokenizerStage:
        """The 2D VQGAN that downsamples by ``factor`` (``vqgan-f{factor}``)."""
        return cls(TokenizerKind.VQGAN, _grid_tokens(factor), factor)

    @classmethod
    def two_stage(cls, num_tokens: int) -> TokenizerStage:
        """The two-stage TiTok (the authors' recipe) with ``num_tokens`` tokens (``titok-k{K}``)."""
        return cls(TokenizerKind.TITOK_TWO_STAGE, num_tokens)

    @classmethod
    def single_stage(cls, num_tokens: int) -> TokenizerStage:
        """The single-stage TiTok with ``num_tokens`` tokens (``titok-k{K}-single``)."""
        return cls(TokenizerKind.TITOK_SINGLE_STAGE, num_tokens)

    @classmethod
    def decoder_finetuned(cls, num_tokens: int) -> TokenizerStage:
        """The single-stage TiTok with ``num_tokens`` tokens after decoder fine-tuning
        (``titok-k{K}-finetune``)."""
        return cls(TokenizerKind.TITOK_SINGLE_STAGE, num_tokens, finetuned=True)

    @classmethod
    def from_name(cls, name: str) -> TokenizerStage:
        """The tokenizer recorded as ``name`` (the inverse of :attr:`name`)."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise ConfigError(
                f"not a tokenizer name: {name!r} "
                "(vqgan-f<factor>, titok-k<K>, titok-k<K>-single or titok-k<K>-finetune)"
            )
        if match["factor"] is not None:
            return cls.vqgan(int(match["factor"]))
        tokens = int(match["tokens"])
        if match["finetune"]:
            return cls.decoder_finetuned(tokens)
        return cls.single_stage(tokens) if match["single"] else cls.two_stage(tokens)

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        """The name in ``state.json`` and the results files, e.g. ``titok-k32-single``."""
        if self.kind is TokenizerKind.VQGAN:
            return f"vqgan-f{self.factor}"
        if self.finetuned:
            return f"titok-k{self.num_tokens}-finetune"
        suffix = "-single" if self.kind is TokenizerKind.TITOK_SINGLE_STAGE else ""
        return f"titok-k{self.num_tokens}{suffix}"

    @property
    def label(self) -> str:
        """The tokenizer's kind in the report's words, e.g. ``1D TiTok single-stage``."""
        return f"{self.kind.value}, decoder fine-tuned" if self.finetuned else self.kind.value

    @property
    def base(self) -> TokenizerStage:
        """The tokenizer it was fine-tuned from (itself if not fine-tuned): the one whose
        tokens it reads."""
        return dataclasses.replace(self, finetuned=False) if self.finetuned else self

    @property
    def is_2d(self) -> bool:
        """Whether its tokens form a 2D grid (a VQGAN) rather than a 1D sequence (a TiTok)."""
        return self.kind is TokenizerKind.VQGAN

    def __str__(self) -> str:
        return self.name

    # ------------------------------------------------------------------ run folders
    @property
    def folder(self) -> str:
        """The run sub-folder (and stage) that trains it to pixels: a two-stage TiTok's stage 2."""
        return f"{self.name}-stage2" if self.kind is TokenizerKind.TITOK_TWO_STAGE else self.name

    @property
    def stage1_folder(self) -> str | None:
        """A two-stage TiTok's stage-1 sub-folder (and stage); None for the others."""
        return f"{self.name}-stage1" if self.kind is TokenizerKind.TITOK_TWO_STAGE else None

    @property
    def training_stages(self) -> tuple[str, ...]:
        """The run stages that train it, in order."""
        return (self.stage1_folder, self.folder) if self.stage1_folder else (self.folder,)

    def export_dir(self, run_dir: str | Path) -> Path:
        """Its ``save_pretrained`` export in the run folder ``run_dir``."""
        return Path(run_dir) / self.folder / "export"

    def load(self, run_dir: str | Path) -> Tokenizer:
        """The trained tokenizer of run folder ``run_dir``, in eval mode."""
        from titok.models.grid_tokenizer import GridTokenizer
        from titok.models.titok import TiTok

        if self.is_2d:
            return GridTokenizer.from_pretrained(self.export_dir(run_dir), IMAGE_SIZE).eval()
        return TiTok.from_pretrained(self.export_dir(run_dir)).eval()


#: The f=8 VQGAN: the proxy-code teacher of the two-stage TiTok and the built-in run's 2D control.
TEACHER = TokenizerStage.vqgan(8)
#: The f=16 VQGAN: the tokenizer of the 2D generator.
GENERATOR_2D = TokenizerStage.vqgan(16)


def tokenizer_catalog(budget: Budget) -> tuple[TokenizerStage, ...]:
    """Every tokenizer a run of ``budget`` trains and measures, in pipeline order: the two
    VQGANs, the two-stage TiTok tokenizers, then the single-stage ones."""
    return (
        TEACHER,
        GENERATOR_2D,
        *[TokenizerStage.two_stage(k) for k in budget.two_stage_token_counts],
        *[TokenizerStage.single_stage(k) for k in budget.token_counts],
    )


def find_tokenizer(catalog: Sequence[TokenizerStage], name: str) -> TokenizerStage:
    """The tokenizer of ``catalog`` called ``name``."""
    for tokenizer in catalog:
        if tokenizer.name == name:
            return tokenizer
    known = ", ".join(t.name for t in catalog)
    raise ConfigError(f"no tokenizer {name!r} in this run (its tokenizers: {known})")


def by_kind(tokenizers: Iterable[TokenizerStage]) -> list[tuple[TokenizerKind, list[TokenizerStage]]]:
    """``tokenizers`` grouped by kind, in :class:`TokenizerKind`'s order (1D two-stage, 1D
    single-stage, 2D), each group by token count: the order of the report's tables and plot lines."""
    tokenizers = list(tokenizers)
    groups = [(kind, [t for t in tokenizers if t.kind is kind]) for kind in TokenizerKind]
    return [(kind, sorted(group, key=lambda t: t.num_tokens)) for kind, group in groups if group]
