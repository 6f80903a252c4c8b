"""Loading pretrained models: moved to :mod:`titok.loading` (``load_tokenizer``, ``load_vqgan``:
:mod:`titok.loading.loaders`); kept for one release.
"""

from titok.loading.loaders import VQGAN_FILE, VQGAN_REPO, load_tokenizer, load_vqgan
from titok.loading.tokenizers import config_from_json
from titok.loading.weights import FORMAT_VERSION, WEIGHT_FILES, save_model
from titok.resources import builtin_generators_dir, builtin_models_dir

__all__ = [
    "FORMAT_VERSION",
    "VQGAN_FILE",
    "VQGAN_REPO",
    "WEIGHT_FILES",
    "builtin_generators_dir",
    "builtin_models_dir",
    "config_from_json",
    "load_tokenizer",
    "load_vqgan",
    "save_model",
]
