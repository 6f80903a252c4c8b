"""Where a generator's architecture and weights are: built-in names, presets, hub repos, local paths.

:func:`find_generator` only finds the files (downloading from the hub when allowed); building the
model from them is :meth:`titok.models.generator.model.Generator.from_pretrained`. The formats
understood:

* ours: a folder with ``config.json`` (``{"library": "titok", "kind": "generator", "config": {...}}``)
  and ``model.safetensors``, written by ``save_pretrained``;
* the authors' hub format: ``config.json`` holding their whole training config (the generator in
  ``model.generator``, the codebook size in ``model.vq_model``) and ``model.safetensors`` or
  ``pytorch_model.bin``;
* a single weights file (the authors' raw ``generator_titok_l32.bin`` and the like, or any
  safetensors file) together with a preset name that gives the architecture.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from titok.errors import CheckpointError, ConfigError
from titok.loading import hub
from titok.loading.lookup import (
    ModelFiles,
    folder_files,
    hub_repo,
    hub_repo_files,
    is_ours,
    needs_preset,
    read_config_json,
    with_raw_file_hint,
)
from titok.loading.weights import WEIGHT_SUFFIXES
from titok.models.generator.config import GeneratorConfig
from titok.models.generator.presets import (
    GENERATOR_PRESETS,
    RAW_REPO,
    GeneratorPreset,
    get_generator_preset,
    normalize_preset_name,
)
from titok.resources import builtin_generators_dir

_RAW_NAME = re.compile(r"generator[_-]titok[_-](l32|b64|s128)", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\{([\w.]+)\}")


#: A generator's architecture, its weights file and how that file is named in messages.
GeneratorFiles = ModelFiles[GeneratorConfig]


def find_generator(
    name_or_path: str | os.PathLike[str], preset: str | None = None, raw: bool = False
) -> GeneratorFiles:
    """The files of a generator (see :meth:`~titok.models.generator.model.Generator.from_pretrained`)."""
    path = Path(name_or_path)
    if path.is_dir():
        return folder_files(path, preset, generator_config_from_json, _preset_config)
    if path.is_file():
        return _weights_file(path, preset, str(path))
    name = str(name_or_path)
    builtin = builtin_generators_dir() / name
    if "/" not in name and builtin.is_dir():
        return folder_files(builtin, preset, generator_config_from_json, _preset_config)
    key = normalize_preset_name(name)
    if key in GENERATOR_PRESETS:
        return _published(GENERATOR_PRESETS[key], raw)
    local_looking = name.startswith((".", "/", "~")) or os.sep != "/" and os.sep in name
    if not local_looking and name.endswith(WEIGHT_SUFFIXES) and name.count("/") >= 2:
        owner, repo, filename = name.split("/", 2)
        weights = hub.download(f"{owner}/{repo}", filename)
        return _weights_file(weights, preset, name)
    if not local_looking and name.count("/") == 1:
        return hub_repo(name, generator_config_from_json)
    if local_looking or "/" in name or name.endswith(WEIGHT_SUFFIXES):
        raise CheckpointError(f"{name}: no such file or folder")
    published = [n for n, p in GENERATOR_PRESETS.items() if p.hub_repo]
    raise CheckpointError(
        f"unknown generator {name!r}: not a local path, published preset ({', '.join(published)}) or hub repo id"
    )


def names_generator(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether ``name_or_path`` is, without any download, recognisably a generator: a built-in
    generator, a generator preset, a folder whose ``config.json`` holds a generator, or a weights
    file named like the authors' ``generator_titok_l32.bin``. Hub ids and other files: False."""
    path = Path(name_or_path)
    if path.is_dir():
        try:
            generator_config_from_json(path / "config.json")
        except (CheckpointError, ConfigError):
            return False
        return True
    if path.is_file():
        return _RAW_NAME.search(path.name) is not None
    name = str(name_or_path)
    if "/" not in name and (builtin_generators_dir() / name).is_dir():
        return True
    return normalize_preset_name(name) in GENERATOR_PRESETS


def generator_config_from_json(path: Path) -> GeneratorConfig:
    """Read a generator config from our ``config.json`` or the authors' (``model.generator``)."""
    data = read_config_json(path)
    try:
        if is_ours(data, "generator", path):
            return GeneratorConfig.from_dict(data.get("config", {}))
        model = data.get("model")
        if isinstance(model, dict) and isinstance(model.get("generator"), dict):
            generator = {
                k: _resolve_reference(v, data, f"model.generator.{k}") for k, v in model["generator"].items()
            }
            vq = model.get("vq_model") or {}
            if "codebook_size" not in vq:
                raise ConfigError("model.vq_model.codebook_size is missing")
            codebook = _resolve_reference(vq["codebook_size"], data, "model.vq_model.codebook_size")
            return GeneratorConfig.from_official(generator, codebook)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    raise CheckpointError(f"{path}: not a generator config (no 'library: titok' nor 'model.generator')")


def _resolve_reference(value: Any, root: Mapping[str, Any], field: str) -> Any:
    """Follow an unresolved ``${a.b.c}`` reference of the authors' saved configs."""
    if not isinstance(value, str):
        return value
    match = _REFERENCE.fullmatch(value.strip())
    if match is None:
        return value
    node: Any = root
    for part in match.group(1).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"{field}: reference {value} points nowhere")
        node = node[part]
    return node


def drop_derived_buffers(
    config: GeneratorConfig, state: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Remove the index buffers older BERT checkpoints store, after checking they hold the defaults."""
    expected = {
        "model.embeddings.position_ids": torch.arange(config.seq_len + 1)[None],
        "model.embeddings.token_type_ids": torch.zeros(1, config.seq_len + 1, dtype=torch.long),
    }
    if config.arch != "bert" or not any(name in state for name in expected):
        return state
    state = dict(state)
    for name, default in expected.items():
        if name in state:
            got = state.pop(name)
            if got.shape != default.shape or not torch.equal(got.long(), default):
                raise CheckpointError(
                    f"{source}: {name} does not hold the default indices {list(default.shape)}"
                )
    return state


def _preset_config(name: str) -> GeneratorConfig:
    return dataclasses.replace(get_generator_preset(name).config)


def _weights_file(path: Path, preset: str | None, source: str) -> GeneratorFiles:
    if preset is None:
        match = _RAW_NAME.search(Path(source).name)
        if match is None:
            raise needs_preset(source, GENERATOR_PRESETS)
        preset = f"titok-{match.group(1).lower()}"
    return GeneratorFiles(_preset_config(preset), path, source)


def _published(preset: GeneratorPreset, raw: bool) -> GeneratorFiles:
    if preset.hub_repo is None:
        raise CheckpointError(
            f"preset {preset.name!r} has no published weights; build it with Generator.from_preset({preset.name!r}) "
            "or load your own checkpoint by path"
        )
    if raw:
        if preset.raw_file is None:
            raise CheckpointError(
                f"{preset.name!r} has no raw state-dict file in {RAW_REPO}; load the hub repo {preset.hub_repo} instead"
            )
        weights = hub.download(RAW_REPO, preset.raw_file)
        return _weights_file(weights, preset.name, f"{RAW_REPO}/{preset.raw_file}")
    try:
        config_path, weights, source = hub_repo_files(preset.hub_repo)
    except CheckpointError as exc:
        if preset.raw_file is None:
            raise
        raise with_raw_file_hint(
            exc, RAW_REPO, preset.raw_file, f"Generator.from_pretrained(PATH, preset={preset.name!r})"
        ) from exc
    return GeneratorFiles(generator_config_from_json(config_path), weights, source)


__all__ = [
    "GeneratorFiles",
    "drop_derived_buffers",
    "find_generator",
    "generator_config_from_json",
    "names_generator",
]
