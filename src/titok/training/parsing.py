"""From YAML to typed dataclasses: dotted overrides, ``${ENV}`` expansion, key and type checks.

The machinery under :func:`titok.training.config.load_recipe`, apart from what a recipe holds:
:func:`apply_override` sets ``section.key=value`` in the raw mapping, :func:`expand_env`
replaces ``${NAME}`` / ``${NAME:-default}`` in strings, and :func:`build_section` builds a
dataclass from a mapping, refusing unknown keys and converting only harmless cases
(``1`` -> ``1.0``, ``"1e-4"`` -> ``1e-4``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import re
import types
import typing
from dataclasses import fields
from typing import Any

import yaml

from titok.errors import ConfigError

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


def check_field_types(cls: type, values: dict[str, Any], where: str, source: str) -> None:
    """Refuse a value of ``values`` whose type does not fit the field of dataclass ``cls`` it sets.

    For sections kept as plain mappings until a model config is built from them (``model``):
    ``model.encoder_width=abc`` is a ConfigError naming the key, not an error deep inside a layer.
    Keys that ``cls`` lacks are left to the caller's key check; nested dataclass fields given as
    mappings are checked the same way."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None:
            continue
        if dataclasses.is_dataclass(hint):
            if isinstance(value, dict):
                check_field_types(hint, value, f"{where}{key}.", source)
            continue
        coerce(value, hint, f"{where}{key}", source)


def coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    """Check ``value`` against a type hint, converting harmless cases (1 -> 1.0, "1e-4" -> 1e-4)."""
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{source}: '{key}' may not be empty")
    for option in options:
        if option is type(None):
            continue
        ok, converted = _convert(value, option)
        if ok:
            return converted
    names = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise ConfigError(f"{source}: '{key}' expects {names}, got {value!r}")


def _type_name(option: Any) -> str:
    """``int``; ``list of int`` for list / tuple / Sequence hints."""
    if typing.get_origin(option) in (list, tuple, collections.abc.Sequence):
        args = [a for a in typing.get_args(option) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if len(args) == 1 else "list"
    return getattr(option, "__name__", str(option))


def _convert(value: Any, option: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(option)
    if origin in (list, tuple, collections.abc.Sequence):
        args = [a for a in typing.get_args(option) if a is not Ellipsis]
        item = args[0] if len(args) == 1 else Any
        if not isinstance(value, list | tuple):
            return False, None
        out = []
        for v in value:
            ok, c = _convert(v, item) if item is not Any else (True, v)
            if not ok:
                return False, None
            out.append(c)
        return True, (tuple(out) if origin is tuple else out)
    if origin is dict or option is dict:
        return (True, dict(value)) if isinstance(value, dict) else (False, None)
    if option is bool:
        return (True, value) if isinstance(value, bool) else (False, None)
    if option is int:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, None
    if option is float:
        if isinstance(value, bool):
            return False, None
        if isinstance(value, int | float):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value.replace("_", ""))
            except ValueError:
                return False, None
        return False, None
    if option is str:
        return (True, value) if isinstance(value, str) else (False, None)
    return True, value
