"""Where a tokenizer's files are: moved to :mod:`titok.loading.tokenizers`; kept for one release."""

from titok.loading.tokenizers import TokenizerFiles, builtin_model_names, config_from_json, find_tokenizer
from titok.resources import builtin_models_dir

__all__ = [
    "TokenizerFiles",
    "builtin_model_names",
    "builtin_models_dir",
    "config_from_json",
    "find_tokenizer",
]
