"""Checking plain values (from YAML or JSON) against the type hints of a config dataclass.

:func:`coerce` checks one value against one hint, converting only harmless cases (``1`` -> ``1.0``,
``"1e-4"`` -> ``1e-4``, a list for a tuple field); :func:`check_field_types` checks a mapping
against a dataclass's fields. Used where recipes are read and where saved model configs are
loaded, so a wrong value names its key instead of failing inside a layer.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from typing import Any

from titok.errors import ConfigError


def check_field_types(cls: type, values: dict[str, Any], where: str, source: str) -> None:
    """Refuse a value of ``values`` whose type does not fit the field of dataclass ``cls`` it sets.

    For sections kept as plain mappings until a model config is built from them (``model``):
    ``model.encoder_width=abc`` is a ConfigError naming the key, not an error deep inside a layer.
    Keys that ``cls`` lacks (``preset``, unknown ones) are left to the caller's key check; nested dataclass fields given as
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
    """Check ``value`` against a type hint, converting harmless cases (1 -> 1.0, "1e-4" -> 1e-4).

    A mismatch is a ConfigError "SOURCE: 'KEY' expects TYPE, got VALUE" (no prefix if ``source``
    is empty)."""
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{source + ': ' if source else ''}'{key}' may not be empty")
    for option in options:
        if option is type(None):
            continue
        ok, converted = _convert(value, option)
        if ok:
            return converted
    names = " or ".join(_type_name(o) for o in options if o is not type(None))
    raise ConfigError(f"{source + ': ' if source else ''}'{key}' expects {names}, got {value!r}")


_SEQUENCES = (list, tuple, collections.abc.Sequence)


def _item_hint(option: Any) -> Any:
    """The item type of a list / tuple / Sequence hint (``tuple[int, ...]`` -> int), else Any."""
    args = [a for a in typing.get_args(option) if a is not Ellipsis]
    return args[0] if len(args) == 1 else Any


def _type_name(option: Any) -> str:
    """``int``; ``list of int`` for list / tuple / Sequence hints."""
    if typing.get_origin(option) in _SEQUENCES:
        item = _item_hint(option)
        return "list" if item is Any else f"list of {_type_name(item)}"
    return getattr(option, "__name__", str(option))


def _convert(value: Any, option: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(option)
    if origin in _SEQUENCES:
        item = _item_hint(option)
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
