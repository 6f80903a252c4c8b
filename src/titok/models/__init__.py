"""Model definitions: the TiTok tokenizer, its quantizers, the MaskGIT-VQGAN and the generators."""

from titok.models.config import TiTokConfig
from titok.models.generator import Generator, GeneratorConfig, generator_presets
from titok.models.presets import get_preset, tokenizer_config, tokenizer_presets
from titok.models.quantizers import DiagonalGaussian, QuantizerOutput, VectorQuantizer
from titok.models.titok import TiTok, TiTokOutput
from titok.models.vqgan import VQGAN, VQGANConfig

__all__ = [
    "VQGAN",
    "DiagonalGaussian",
    "Generator",
    "GeneratorConfig",
    "QuantizerOutput",
    "TiTok",
    "TiTokConfig",
    "TiTokOutput",
    "VQGANConfig",
    "VectorQuantizer",
    "generator_presets",
    "get_preset",
    "tokenizer_config",
    "tokenizer_presets",
]
