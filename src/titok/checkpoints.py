"""Reading weight files: moved to :mod:`titok.loading.weights` (``ModelFiles``: to
:mod:`titok.loading.lookup`); kept for one release.

Not to be confused with :mod:`titok.training.checkpointing`, the resumable training checkpoints.
"""

from titok.loading.lookup import ModelFiles
from titok.loading.weights import (
    FORMAT_VERSION,
    WEIGHT_FILES,
    build_and_load,
    load_strict,
    mismatch_report,
    read_state_dict,
    save_model,
    weights_in,
)

__all__ = [
    "FORMAT_VERSION",
    "WEIGHT_FILES",
    "ModelFiles",
    "build_and_load",
    "load_strict",
    "mismatch_report",
    "read_state_dict",
    "save_model",
    "weights_in",
]
