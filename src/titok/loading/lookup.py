"""The lookup steps that tokenizers and generators share: from a folder, a hub repo or a bare file.

:mod:`titok.loading.tokenizers` and :mod:`titok.loading.generators` each decide which of these
steps a name or path calls for (their rules differ: presets, raw files, hub file ids); the steps
themselves, and the messages they fail with, are the same for both kinds and live here once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from titok.errors import CheckpointError
from titok.loading import hub
from titok.loading.weights import WEIGHT_FILES, weights_in

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class ModelFiles(Generic[ConfigT]):
    """A model's architecture, its weights file and how that file is named in messages."""

    config: ConfigT
    weights: Path
    source: str


def read_config_json(path: Path) -> dict[str, Any]:
    """The JSON object in a ``config.json``; an unreadable file or other JSON is a :class:`CheckpointError`."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON config ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def is_ours(data: Mapping[str, Any], kind: str, path: Path) -> bool:
    """Whether ``data`` is a ``config.json`` this library wrote for a ``kind`` model.

    One it wrote for another kind (a generator's folder given as a tokenizer) is refused, so the
    caller need only tell ours from the authors' format.
    """
    if data.get("library") != "titok":
        return False
    if data.get("kind") != kind:
        raise CheckpointError(f"{path}: holds a {data.get('kind')!r}, not a {kind}")
    return True


def folder_files(
    folder: Path,
    preset: str | None,
    read_config: Callable[[Path], ConfigT],
    preset_config: Callable[[str], ConfigT],
) -> ModelFiles[ConfigT]:
    """The files of a model folder: its weights, and its ``config.json`` or else the preset's architecture."""
    weights = weights_in(folder)
    if (folder / "config.json").is_file():
        config = read_config(folder / "config.json")
    elif preset is not None:
        config = preset_config(preset)
    else:
        raise CheckpointError(f"{folder}: no config.json; pass the preset that gives the architecture")
    return ModelFiles(config, weights, str(weights))


def hub_repo_files(repo_id: str) -> tuple[Path, Path, str]:
    """``config.json``, the weights and their name in messages, of a hub repo in folder form.

    Weights already in the cache are taken in :data:`~titok.loading.weights.WEIGHT_FILES` order,
    so an offline machine uses whichever it has; otherwise the first is downloaded.
    """
    config_path = hub.download(repo_id, "config.json")
    for name in WEIGHT_FILES:
        cached = hub.cached_or_none(repo_id, name)
        if cached is not None:
            return config_path, cached, f"{repo_id}/{name}"
    return config_path, hub.download(repo_id, WEIGHT_FILES[0]), f"{repo_id}/{WEIGHT_FILES[0]}"


def hub_repo(repo_id: str, read_config: Callable[[Path], ConfigT]) -> ModelFiles[ConfigT]:
    """The files of a hub repo in folder form, its ``config.json`` read by ``read_config``."""
    config_path, weights, source = hub_repo_files(repo_id)
    return ModelFiles(read_config(config_path), weights, source)


def needs_preset(source: str, presets: Iterable[str]) -> CheckpointError:
    """The error for a bare weights file given without the preset that gives its architecture."""
    return CheckpointError(
        f"{source}: a bare weights file needs a preset for its architecture "
        f"(e.g. preset='titok-l32'; presets: {', '.join(presets)})"
    )


def with_raw_file_hint(exc: CheckpointError, raw_repo: str, raw_file: str, load_with: str) -> CheckpointError:
    """``exc`` (a published hub repo out of reach) followed by where the raw state dict is and how
    to load it by hand (``load_with``: the call, e.g. ``TiTok.from_pretrained(PATH, preset='x')``)."""
    return CheckpointError(
        f"{exc} Alternatively download {hub.hub_file_url(raw_repo, raw_file)} and load it with {load_with}."
    )


__all__ = [
    "ModelFiles",
    "folder_files",
    "hub_repo",
    "hub_repo_files",
    "is_ours",
    "needs_preset",
    "read_config_json",
    "with_raw_file_hint",
]
