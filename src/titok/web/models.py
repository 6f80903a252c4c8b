"""The models of the web demo: one tokenizer and one generator, each loaded once and shared.

Loading is lazy and happens at most once per model, whichever request asks first (``titok web``
asks before it starts serving). A model that fails to load is not retried: its error is kept and
shown on the page by every request that needs it, and the server goes on serving the rest.

Model calls run one at a time (:meth:`SharedModels.computing`): requests from several pages
wait their turn instead of sharing the CPU threads, and a model is never used by two requests
at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from titok.errors import TitokError
from titok.models.generator import Generator
from titok.models.titok import TiTok


@dataclass(frozen=True)
class LoadedTokenizer:
    """A tokenizer and one line saying which it is."""

    model: TiTok
    description: str


@dataclass(frozen=True)
class LoadedGenerator:
    """A generator, its class names in label order, and one line saying which it is."""

    model: Generator
    class_names: tuple[str, ...]
    description: str


#: Loads the tokenizer; gets the loaded generator (None without one), whose own tokenizer it may follow.
TokenizerLoader = Callable[[LoadedGenerator | None], LoadedTokenizer]
GeneratorLoader = Callable[[], LoadedGenerator]


class ModelLoadError(TitokError):
    """A model of the demo could not be loaded (kept, and raised again at each use)."""


def check_tokenizer(model: TiTok) -> None:
    """Refuse tokenizers whose tokens the page cannot show and edit as code ids."""
    if model.is_vae:
        raise TitokError("the web demo needs a tokenizer with discrete tokens (a VQ model), not a VAE")
    if model.config.decoder_head == "proxy":
        raise TitokError("the web demo needs a tokenizer that decodes to pixels, not a stage-1 (proxy) model")


class SharedModels:
    """The tokenizer and the generator of the demo, loaded at most once and shared by all requests.

    Args:
        load_tokenizer: builds the tokenizer (see :data:`TokenizerLoader`).
        load_generator: builds the generator, or None for a demo without generation.
        no_generator: why there is no generator (shown on the page when ``load_generator`` is None).
    """

    def __init__(
        self,
        load_tokenizer: TokenizerLoader,
        load_generator: GeneratorLoader | None = None,
        no_generator: str = "no generator was given",
    ) -> None:
        self._load_tokenizer = load_tokenizer
        self._load_generator = load_generator
        self._no_generator = no_generator
        self._tokenizer: LoadedTokenizer | ModelLoadError | None = None
        self._generator: LoadedGenerator | ModelLoadError | None = None
        self._loading = threading.Lock()
        self._compute = threading.Lock()

    @property
    def has_generator(self) -> bool:
        return self._load_generator is not None

    def tokenizer(self) -> LoadedTokenizer:
        """The tokenizer, loaded on first use; raises :class:`ModelLoadError` if it cannot be."""
        with self._loading:
            if self._tokenizer is None:
                generator = self._generator_or_none()
                try:
                    loaded = self._load_tokenizer(generator)
                    check_tokenizer(loaded.model)
                    self._tokenizer = loaded
                except Exception as exc:
                    self._tokenizer = ModelLoadError(f"the tokenizer could not be loaded: {exc}")
            result = self._tokenizer
        if isinstance(result, ModelLoadError):
            raise result
        return result

    def generator(self) -> LoadedGenerator:
        """The generator, loaded on first use; raises :class:`ModelLoadError` if it cannot be."""
        if self._load_generator is None:
            raise ModelLoadError(f"generation is off: {self._no_generator}")
        with self._loading:
            result = self._generator_or_error()
        if isinstance(result, ModelLoadError):
            raise result
        return result

    def generation_pair(self) -> tuple[LoadedTokenizer, LoadedGenerator]:
        """The generator and the tokenizer that decodes its samples; refuses a pair that does not fit."""
        generator = self.generator()
        tokenizer = self.tokenizer()
        tok, gen = tokenizer.model, generator.model
        if tok.codebook_size != gen.config.codebook_size or tok.num_tokens != gen.config.seq_len:
            raise TitokError(
                f"the tokenizer ({tok.num_tokens} tokens, {tok.codebook_size} codes) does not fit the "
                f"generator ({gen.config.seq_len} tokens, {gen.config.codebook_size} codes)"
            )
        return tokenizer, generator

    def preload(self) -> list[str]:
        """Load both models now; returns one line per model: what was loaded, or why not."""
        lines = []
        for kind, get in (("generator", self.generator), ("tokenizer", self.tokenizer)):
            try:
                lines.append(f"{kind}: {get().description}")
            except ModelLoadError as exc:
                lines.append(f"{kind}: {exc}")
        return lines

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        """Hold the models for one request's computation (requests take turns)."""
        with self._compute:
            yield

    def _generator_or_none(self) -> LoadedGenerator | None:
        if self._load_generator is None:
            return None
        result = self._generator_or_error()
        return None if isinstance(result, ModelLoadError) else result

    def _generator_or_error(self) -> LoadedGenerator | ModelLoadError:
        """Load the generator once (the caller holds the loading lock)."""
        if self._generator is None:
            assert self._load_generator is not None
            try:
                self._generator = self._load_generator()
            except Exception as exc:
                self._generator = ModelLoadError(f"the generator could not be loaded: {exc}")
        return self._generator


__all__ = [
    "GeneratorLoader",
    "LoadedGenerator",
    "LoadedTokenizer",
    "ModelLoadError",
    "SharedModels",
    "TokenizerLoader",
    "check_tokenizer",
]
