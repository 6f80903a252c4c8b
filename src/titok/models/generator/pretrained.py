"""Where a generator's files are: moved to :mod:`titok.loading.generators`; kept for one release."""

from titok.loading.generators import (
    GeneratorFiles,
    drop_derived_buffers,
    find_generator,
    generator_config_from_json,
    names_generator,
)
from titok.loading.weights import WEIGHT_SUFFIXES

__all__ = [
    "WEIGHT_SUFFIXES",
    "GeneratorFiles",
    "drop_derived_buffers",
    "find_generator",
    "generator_config_from_json",
    "names_generator",
]
