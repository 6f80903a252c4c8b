"""The packaged training recipes and how a ``--config`` value names one."""

from __future__ import annotations

from pathlib import Path

from titok.errors import ConfigError
from titok.resources import recipes_dir


def resolve_recipe(config: str) -> Path:
    """A recipe path: the file itself, else the packaged recipe of that name."""
    path = Path(config)
    if path.is_file():
        return path
    packaged = recipes_dir() / (config if config.endswith(".yaml") else f"{config}.yaml")
    if packaged.is_file():
        return packaged
    known = ", ".join(sorted(p.stem for p in recipes_dir().glob("*.yaml")))
    raise ConfigError(f"{config}: no such recipe file nor packaged recipe (packaged: {known})")


__all__ = ["recipes_dir", "resolve_recipe"]
