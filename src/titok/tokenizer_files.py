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

import json
import os
from pathlib import Path

from titok import hub
from titok.checkpoints import WEIGHT_FILES, ModelFiles, weights_in
from titok.errors import CheckpointError, ConfigError
from titok.models.config import TiTokConfig
from titok.models.presets import get_preset, tokenizer_presets
from titok.resources import builtin_models_dir

#: A tokenizer's architecture, its weights file and how that file is named in messages.
TokenizerFiles = ModelFiles[TiTokConfig]


def config_from_json(path: Path) -> TiTokConfig:
    """Read a tokenizer config from our ``config.json`` or the authors' one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON config ({exc})") from exc
    try:
        if data.get("library") == "titok":
            if data.get("kind") != "tokenizer":
                raise CheckpointError(f"{path}: holds a {data.get('kind')!r}, not a tokenizer")
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
        weights = weights_in(path)
        if (path / "config.json").is_file():
            config = config_from_json(path / "config.json")
        elif preset is not None:
            config = get_preset(preset).build_config()
        else:
            raise CheckpointError(f"{path}: no config.json; pass the preset that gives the architecture")
        return TokenizerFiles(config, weights, str(weights))
    if path.is_file():
        if preset is None:
            raise CheckpointError(
                f"{path}: a bare weights file needs a preset for its architecture "
                f"(e.g. preset='titok-l32'; presets: {', '.join(tokenizer_presets())})"
            )
        return TokenizerFiles(get_preset(preset).build_config(), path, str(path))

    name = str(name_or_path)
    builtin = builtin_models_dir() / name
    if builtin.is_dir():
        return find_tokenizer(builtin)
    if name in tokenizer_presets():
        return _published(name)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return _hub_repo(name)
    if "/" in name or os.sep in name or name.endswith((".bin", ".safetensors", ".pt", ".pth")):
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


def _hub_repo(repo_id: str) -> TokenizerFiles:
    config_path = hub.download(repo_id, "config.json")
    for fname in WEIGHT_FILES:
        cached = hub.cached_or_none(repo_id, fname)
        if cached is not None:
            return TokenizerFiles(config_from_json(config_path), cached, f"{repo_id}/{fname}")
    weights = hub.download(repo_id, WEIGHT_FILES[0])
    return TokenizerFiles(config_from_json(config_path), weights, f"{repo_id}/{WEIGHT_FILES[0]}")


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
        return _hub_repo(p.hub_repo)
    except CheckpointError as exc:
        if p.raw_repo and p.raw_file:
            raise CheckpointError(
                f"{exc} Alternatively download {hub.hub_file_url(p.raw_repo, p.raw_file)} and load it with "
                f"TiTok.from_pretrained(PATH, preset={name!r}) (CLI: --model PATH --preset {name})."
            ) from exc
        raise


__all__ = [
    "TokenizerFiles",
    "builtin_model_names",
    "builtin_models_dir",
    "config_from_json",
    "find_tokenizer",
]
