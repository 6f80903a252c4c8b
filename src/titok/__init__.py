"""titok: the TiTok 1D image tokenizer, its training, generation and evaluation.

>>> import titok
>>> model = titok.TiTok.from_pretrained("titok-l32")   # doctest: +SKIP
>>> tokens = model.encode("cat.jpg")                   # LongTensor (1, 32)
>>> images = model.decode(tokens)                      # (1, 3, 256, 256) in [0, 1]
>>> gen = titok.Generator.from_pretrained("titok-l32")  # doctest: +SKIP
>>> images = model.decode(gen.generate([207, 980]))    # class-conditional samples
"""

from titok.errors import CheckpointError, ConfigError, DataError, ImageError, TitokError
from titok.models import (
    VQGAN,
    Generator,
    GeneratorConfig,
    TiTok,
    TiTokConfig,
    VQGANConfig,
    generator_presets,
    tokenizer_presets,
)

__version__ = "0.1.0"

__all__ = [
    "VQGAN",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Generator",
    "GeneratorConfig",
    "ImageError",
    "TiTok",
    "TiTokConfig",
    "TitokError",
    "VQGANConfig",
    "generator_presets",
    "tokenizer_presets",
]
