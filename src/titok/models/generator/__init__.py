"""Class-conditional MaskGIT generators over 1D token sequences, as published with TiTok.

``config.py`` (:class:`GeneratorConfig`), ``presets.py`` (named architectures), ``model.py``
(:class:`Generator`: vocabulary, forward, sampling, files), ``bert.py`` and ``uvit.py`` (the two
architectures, each a :class:`Generator` subclass with the authors' parameter names). Where a
checkpoint's files are is :mod:`titok.loading.generators` (``pretrained.py`` here re-exports it for
one release).
"""

from titok.loading.generators import generator_config_from_json
from titok.loading.weights import FORMAT_VERSION, WEIGHT_FILES, WEIGHT_SUFFIXES
from titok.models.generator.bert import BertGenerator
from titok.models.generator.config import ARCHITECTURES, GeneratorConfig
from titok.models.generator.model import Generator, generator_from_state_dict, load_generator
from titok.models.generator.presets import (
    GENERATOR_PRESETS,
    RAW_REPO,
    GeneratorPreset,
    generator_presets,
    get_generator_preset,
)
from titok.models.generator.uvit import UViTGenerator

__all__ = [
    "ARCHITECTURES",
    "FORMAT_VERSION",
    "GENERATOR_PRESETS",
    "RAW_REPO",
    "WEIGHT_FILES",
    "WEIGHT_SUFFIXES",
    "BertGenerator",
    "Generator",
    "GeneratorConfig",
    "GeneratorPreset",
    "UViTGenerator",
    "generator_config_from_json",
    "generator_from_state_dict",
    "generator_presets",
    "get_generator_preset",
    "load_generator",
]
