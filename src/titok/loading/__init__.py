"""Loading models and weights: hub downloads, weight files, and where each model kind's files are.

``hub.py`` (downloads, offline use), ``weights.py`` (reading, writing and strictly matching weight
files), ``lookup.py`` (the lookup steps the model kinds share), ``tokenizers.py`` and
``generators.py`` (a name, folder, file or hub id resolved to a config and a weights file) and
``loaders.py`` (built models: tokenizers, the MaskGIT-VQGAN). Packaged files are found through
:mod:`titok.resources`; resumable training checkpoints are :mod:`titok.training.checkpointing`.
"""

from titok.loading.generators import (
    GeneratorFiles,
    drop_derived_buffers,
    find_generator,
    generator_config_from_json,
    names_generator,
)
from titok.loading.hub import cached_or_none, download, hub_file_url, hub_reachable
from titok.loading.loaders import VQGAN_FILE, VQGAN_REPO, load_tokenizer, load_vqgan
from titok.loading.lookup import ModelFiles
from titok.loading.tokenizers import TokenizerFiles, builtin_model_names, config_from_json, find_tokenizer
from titok.loading.weights import (
    FORMAT_VERSION,
    WEIGHT_FILES,
    WEIGHT_SUFFIXES,
    build_and_load,
    load_strict,
    mismatch_report,
    read_state_dict,
    save_model,
    weights_in,
)

__all__ = [
    "FORMAT_VERSION",
    "VQGAN_FILE",
    "VQGAN_REPO",
    "WEIGHT_FILES",
    "WEIGHT_SUFFIXES",
    "GeneratorFiles",
    "ModelFiles",
    "TokenizerFiles",
    "build_and_load",
    "builtin_model_names",
    "cached_or_none",
    "config_from_json",
    "download",
    "drop_derived_buffers",
    "find_generator",
    "find_tokenizer",
    "generator_config_from_json",
    "hub_file_url",
    "hub_reachable",
    "load_strict",
    "load_tokenizer",
    "load_vqgan",
    "mismatch_report",
    "names_generator",
    "read_state_dict",
    "save_model",
    "weights_in",
]
