"""From YAML to typed dataclasses: dotted overrides, ``${ENV}`` expansion, key and type checks.

The machinery under :func:`titok.training.config.load_recipe`, apart from what a recipe holds:
:func:`apply_override` sets ``section.key=value`` in the raw mapping, :func:`expand_env`
replaces ``${NAME}`` / ``${NAME:-default}`` in strings, and :func:`build_section` builds a
dataclass from a mapping, refusing unknown keys and converting only harmless cases
(``1`` -> ``1.0``, ``"1e-4"`` -> ``1e-4``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import fields
from typing import Any

import yaml

from titok.errors import ConfigError
from titok.fieldtypes import coerce

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader with YAML 1.2 booleans: only ``true`` / ``false`` (any case) are bools.

    PyYAML follows YAML 1.1, where ``no``, ``off``, ``yes``, ``on``, ``y`` and ``n`` are booleans too,
    so ``training.mixed_precision=no`` would arrive as ``False`` for a string field."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """Parse recipe text (a file or an override's value) with :class:`RecipeLoader`."""
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def apply_override(data: dict[str, Any], item: str, source: str) -> None:
    """Set ``data[a][b] = value`` for an override ``a.b=value`` (value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value (recipe {source})")
    dotted, _, raw = item.partition("=")
    keys = [k.strip() for k in dotted.strip().split(".")]
    if not all(keys):
        raise ConfigError(f"override {item!r}: empty key name (recipe {source})")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {item!r}: '{'.'.join(keys[: i + 1])}' is not a section (recipe {source})"
            )
        node = child
    node[keys[-1]] = value


def expand_env(value: Any) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string of a nested structure."""
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, str) and "${" in value:
        return _ENV_PATTERN.sub(lambda m: os.environ.get(m[1]) or (m[2] or ""), value)
    return value


def build_section(cls: type, data: Any, where: str, source: str) -> Any:
    """The dataclass ``cls`` from a mapping: unknown keys and wrong types are a ConfigError naming
    ``where`` + the key and ``source``; nested dataclass fields are built the same way."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where.rstrip('.')}' must be a section (mapping), got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key '{where}{key}' (known in {where.rstrip('.') or 'the top level'}: "
                f"{', '.join(sorted(known))})"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build_section(hint, value if value is not None else {}, f"{where}{key}.", source)
        else:
            kwargs[key] = coerce(value, hint, f"{where}{key}", source)
    return cls(**kwargs)
