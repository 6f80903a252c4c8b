"""ImageNet-1k class names, and turning a class name or id into a label.

``imagenet_classes()`` lists the 1000 ImageNet-1k classes in their standard index order, each as
its WordNet synonyms joined by ", " (index 1 is ``"goldfish, Carassius auratus"``).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from functools import cache

from titok.errors import TitokError
from titok.resources import package_path

_CLASSES_FILE = package_path("data", "imagenet_classes.json")

#: The 10 Imagenette classes in the label order of its shards (short ImageNet names).
IMAGENETTE_CLASSES = (
    "tench",
    "English springer",
    "cassette player",
    "chain saw",
    "church",
    "French horn",
    "garbage truck",
    "gas pump",
    "golf ball",
    "parachute",
)


@cache
def _imagenet_classes() -> tuple[str, ...]:
    names = json.loads(_CLASSES_FILE.read_text(encoding="utf-8"))
    if len(names) != 1000:
        raise TitokError(f"{_CLASSES_FILE}: expected 1000 class names, found {len(names)}")
    return tuple(names)


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in index order."""
    return list(_imagenet_classes())


def _normalize(text: str) -> str:
    return " ".join(text.lower().split())


def _synonyms(name: str) -> list[str]:
    return [_normalize(s) for s in name.split(",") if s.strip()]


def resolve_class(name_or_id: str | int, class_list: Sequence[str] | None = None) -> int:
    """The class index of an id (``207``, ``"207"``) or a name (case-insensitive).

    A name may be a whole entry (``"goldfish, Carassius auratus"``) or one of its comma-separated
    synonyms (``"goldfish"``); a first synonym wins over later ones (``"partridge"`` is 86, not
    82). Names shared by several classes (``"crane"``) are refused with their ids.

    Args:
        name_or_id: class id or name.
        class_list: class names in index order; default :func:`imagenet_classes`.

    Raises:
        TitokError: unknown or ambiguous name (close matches are listed), or id out of range.
    """
    classes = list(class_list) if class_list is not None else imagenet_classes()
    if isinstance(name_or_id, bool):
        raise TitokError(f"class must be an id or a name, got {name_or_id!r}")
    if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.strip().isdigit()):
        index = int(name_or_id)
        if not 0 <= index < len(classes):
            raise TitokError(
                f"class id {index} out of range: there are {len(classes)} classes (0..{len(classes) - 1})"
            )
        return index
    if not isinstance(name_or_id, str):
        raise TitokError(f"class must be an id or a name, got {name_or_id!r}")

    query = _normalize(name_or_id)
    for rule in (
        lambda name: _normalize(name) == query,
        lambda name: _synonyms(name)[:1] == [query],
        lambda name: query in _synonyms(name),
    ):
        found = [i for i, name in enumerate(classes) if rule(name)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            listed = "; ".join(f"{i}: {classes[i]}" for i in found)
            raise TitokError(f"class name {name_or_id!r} is ambiguous ({listed}); give the class id instead")

    choices: dict[str, int] = {}
    for i, name in enumerate(classes):
        for synonym in _synonyms(name):
            choices.setdefault(synonym, i)
    close = difflib.get_close_matches(query, list(choices), n=5, cutoff=0.6)
    if close:
        hint = "; close matches: " + ", ".join(f"{c!r} ({choices[c]})" for c in close)
    elif len(classes) <= 100:  # a small model: every name fits on the line
        hint = "; this model's classes: " + ", ".join(f"{i}: {name}" for i, name in enumerate(classes))
    else:
        hint = f"; give a name of the model's {len(classes)} classes or an id 0..{len(classes) - 1}"
    raise TitokError(f"unknown class name {name_or_id!r}{hint}")
