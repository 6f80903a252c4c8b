"""Files shipped inside the ``titok`` package, found through :mod:`importlib.resources`.

One accessor for every packaged file, so that no module computes the package layout from its own
``__file__``: the built-in models and generators (``assets/models/<name>/``,
``assets/generators/<name>/``), the sample photographs (``assets/samples/``), the training recipes
(``recipes/``) and the ImageNet class list (``data/imagenet_classes.json``).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(*parts: str) -> Path:
    """The file or folder ``parts`` inside the installed package (it may not exist, e.g. a
    built-in model that a source checkout has not got)."""
    return Path(str(files("titok").joinpath(*parts)))


def builtin_models_dir() -> Path:
    """Folder of the tokenizers shipped with the package (one ``save_pretrained`` folder per name)."""
    return package_path("assets", "models")


def builtin_generators_dir() -> Path:
    """Folder of the generators shipped with the package (one ``save_pretrained`` folder per name)."""
    return package_path("assets", "generators")


def bundled_samples_dir() -> Path:
    """Folder of the sample photographs shipped in the package (licenses in its SOURCES.md)."""
    return package_path("assets", "samples")


def recipes_dir() -> Path:
    """Folder of the packaged training recipes."""
    return package_path("recipes")


__all__ = [
    "builtin_generators_dir",
    "builtin_models_dir",
    "bundled_samples_dir",
    "package_path",
    "recipes_dir",
]
