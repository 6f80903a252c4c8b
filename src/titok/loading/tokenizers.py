"""Where a tokenizer's architecture and weights are: built-in names, presets, hub repos, local paths.

:func:`find_tokenizer` only finds the files (downloading from the hub when allowed); building the
model from them is :meth:`titok.models.titok.TiTok.from_pretrained`. The formats understood:

* ours: a folder with ``config.json`` (``{"library": "titok", "kind": ..., "config": {...}}``)
  and ``model.safetensors``, written by ``save_pretrained``;
* the authors' hub format: ``config.json`` holding their whole training config (the model in
  ``model.vq_model``) and ``model.safetensors`` or ``pytorch_model.bin``;
* a single weights file (the authors' raw ``tokenizer_titok_l32.bin`` and the like, or any
  safetensors file) together with a preset name that gives the architecture.
"""

from __future__ import annotations

import os
from pathlib import Path

from titok.errors import CheckpointError, ConfigError
from titok.loading import hub
from titok.loading.lookup import (
    ModelFiles,
    folder_files,
    hub_repo,
    is_ours,
    needs_preset,
    read_config_json,
    with_raw_file_hint,
)
from titok.loading.weights import WEIGHT_SUFFIXES
from titok.models.config import TiTokConfig
from titok.models.presets import get_preset, tokenizer_presets
from titok.resources import builtin_models_dir

#: A tokenizer's architecture, its weights file and how that file is named in messages.
TokenizerFiles = ModelFiles[TiTokConfig]


def config_from_json(path: Path) -> TiTokConfig:
    """Read a tokenizer config from our ``config.json`` or the authors' one."""
    data = read_config_json(path)
    try:
        if is_ours(data, "tokenizer", path):
            return TiTokConfig.from_dict(data["config"])
        model = data.get("model", data)
        if "vq_model" in model:
            crop = data.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256)
            return TiTokConfig.from_official(model["vq_model"], image_size=int(crop))
        if "vit_enc_model_size" in data:
            return TiTokConfig.from_official(data)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    raise CheckpointError(f"{path}: not a TiTok tokenizer config (no 'library: titok' nor 'model.vq_model')")


def find_tokenizer(name_or_path: str | os.PathLike[str], preset: str | None = None) -> TokenizerFiles:
    """The files of a tokenizer given as a local folder or file, a built-in name, a preset or a hub id."""
    path = Path(name_or_path)
    if path.is_dir():
        return folder_files(path, preset, config_from_json, _preset_config)
    if path.is_file():
        if preset is None:
            raise needs_preset(str(path), tokenizer_presets())
        return TokenizerFiles(_preset_config(preset), path, str(path))

    name = str(name_or_path)
    builtin = builtin_models_dir() / name
    if builtin.is_dir():
        return find_tokenizer(builtin)
    if name in tokenizer_presets():
        return _published(name)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return hub_repo(name, config_from_json)
    if "/" in name or os.sep in name or name.endswith(WEIGHT_SUFFIXES):
        raise CheckpointError(f"{name}: no such file or folder")
    raise CheckpointError(
        f"unknown model {name!r}: not a local path, built-in model, preset or hub repo id "
        f"(built-in, offline: {', '.join(builtin_model_names()) or 'none installed'}; "
        f"presets: {', '.join(tokenizer_presets())})"
    )


def builtin_model_names() -> list[str]:
    """Names of the tokenizers shipped inside the package (they load offline), e.g. ``imagenette64``."""
    root = builtin_models_dir()
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []


def _preset_config(name: str) -> TiTokConfig:
    return get_preset(name).build_config()


def _published(name: str) -> TokenizerFiles:
    p = get_preset(name)
    if p.hub_repo is None:
        raise CheckpointError(
            f"preset {name!r} has no published weights; build it fresh with TiTok.from_preset({name!r}) "
            "or load your own checkpoint by path"
        )
    # A raw state dict already in the cache is as good as the hub repo, and needs no network.
    if p.raw_repo and p.raw_file:
        raw = hub.cached_or_none(p.raw_repo, p.raw_file)
        if raw is not None and hub.cached_or_none(p.hub_repo, "config.json") is None:
            return TokenizerFiles(p.build_config(), raw, f"{p.raw_repo}/{p.raw_file}")
    try:
        return hub_repo(p.hub_repo, config_from_json)
    except CheckpointError as exc:
        if p.raw_repo and p.raw_file:
            raise with_raw_file_hint(
                exc,
                p.raw_repo,
                p.raw_file,
                f"TiTok.from_pretrained(PATH, preset={name!r}) (CLI: --model PATH --preset {name})",
            ) from exc
        raise


__all__ = [
    "TokenizerFiles",
    "builtin_model_names",
    "config_from_json",
    "find_tokenizer",
]
