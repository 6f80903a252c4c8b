"""Finding and loading tokenizer weights: presets, hub repos, local folders and files.

Formats understood, all loaded strictly (:func:`titok.checkpoints.load_strict`):

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

import torch
from safetensors.torch import save_file

from titok import hub
from titok.checkpoints import load_strict, read_state_dict
from titok.errors import CheckpointError, ConfigError
from titok.models.config import TiTokConfig
from titok.models.presets import get_preset, tokenizer_presets
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN, VQGANConfig

FORMAT_VERSION = 1
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

#: Where the authors publish the MaskGIT-VQGAN used for proxy codes.
VQGAN_REPO, VQGAN_FILE = "fun-research/TiTok", "maskgit-vqgan-imagenet-f16-256.bin"


def builtin_generators_dir() -> Path:
    """Folder of the generators shipped with the package (``<name>/`` in the save_pretrained format)."""
    return Path(__file__).resolve().parent / "assets" / "generators"


def builtin_models_dir() -> Path:
    """Folder of the models shipped inside the package (one sub-folder per name)."""
    return Path(__file__).resolve().parent / "assets" / "models"


def save_model(module: torch.nn.Module, directory: str | os.PathLike[str], kind: str, config: dict) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for ``module`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"library": "titok", "kind": kind, "format_version": FORMAT_VERSION, "config": config}
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def _weights_in(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no weights file ({' or '.join(WEIGHT_FILES)})")


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


def _build_and_load(config: TiTokConfig, weights: Path, source: str) -> TiTok:
    state = read_state_dict(weights)
    with torch.device("meta"):
        model = TiTok(config)
    load_strict(model, state, source)
    return model.eval()


def load_tokenizer(name_or_path: str | os.PathLike[str], preset: str | None = None) -> TiTok:
    """Load a tokenizer from a local folder or file, a built-in name, a preset or a hub repo id."""
    path = Path(name_or_path)
    if path.is_dir():
        weights = _weights_in(path)
        if (path / "config.json").is_file():
            config = config_from_json(path / "config.json")
        elif preset is not None:
            config = get_preset(preset).build_config()
        else:
            raise CheckpointError(f"{path}: no config.json; pass the preset that gives the architecture")
        return _build_and_load(config, weights, str(weights))
    if path.is_file():
        if preset is None:
            raise CheckpointError(
                f"{path}: a bare weights file needs a preset for its architecture "
                f"(e.g. preset='titok-l32'; presets: {', '.join(tokenizer_presets())})"
            )
        return _build_and_load(get_preset(preset).build_config(), path, str(path))

    name = str(name_or_path)
    builtin = builtin_models_dir() / name
    if builtin.is_dir():
        return load_tokenizer(builtin)
    if name in tokenizer_presets():
        return _load_published(name)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return _load_hub_repo(name)
    if "/" in name or os.sep in name or name.endswith((".bin", ".safetensors", ".pt", ".pth")):
        raise CheckpointError(f"{name}: no such file or folder")
    raise CheckpointError(
        f"unknown model {name!r}: not a local path, built-in model, preset or hub repo id "
        f"(presets: {', '.join(tokenizer_presets())})"
    )


def _load_hub_repo(repo_id: str) -> TiTok:
    config_path = hub.download(repo_id, "config.json")
    for i, fname in enumerate(WEIGHT_FILES):
        cached = hub.cached_or_none(repo_id, fname)
        if cached is not None:
            return _build_and_load(config_from_json(config_path), cached, f"{repo_id}/{fname}")
        if i == len(WEIGHT_FILES) - 1:
            break
    weights = hub.download(repo_id, WEIGHT_FILES[0])
    return _build_and_load(config_from_json(config_path), weights, f"{repo_id}/{WEIGHT_FILES[0]}")


def _load_published(name: str) -> TiTok:
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
            return _build_and_load(p.build_config(), raw, f"{p.raw_repo}/{p.raw_file}")
    try:
        return _load_hub_repo(p.hub_repo)
    except CheckpointError as exc:
        if p.raw_repo and p.raw_file:
            raise CheckpointError(
                f"{exc} Alternatively download {hub.hub_file_url(p.raw_repo, p.raw_file)} and load it with "
                f"TiTok.from_pretrained(PATH, preset={name!r}) (CLI: --model PATH --preset {name})."
            ) from exc
        raise


def load_vqgan(
    path_or_name: str | os.PathLike[str] | None = None, config: VQGANConfig | None = None
) -> VQGAN:
    """Load a MaskGIT-style VQGAN.

    ``None`` or ``"maskgit-vqgan"`` is the authors' published f=16 model (hub
    ``fun-research/TiTok``, file ``maskgit-vqgan-imagenet-f16-256.bin``); a folder is one
    written by ``save_pretrained`` (ours); a file is a raw state dict for ``config``
    (default: the published architecture).
    """
    if path_or_name in (None, "maskgit-vqgan"):
        weights = hub.download(VQGAN_REPO, VQGAN_FILE)
        return _vqgan_from(VQGANConfig(), weights)
    path = Path(path_or_name)
    if path.is_dir():
        meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
        if meta is None or meta.get("kind") != "vqgan":
            raise CheckpointError(f"{path}: not a VQGAN folder (config.json with kind 'vqgan' expected)")
        return _vqgan_from(VQGANConfig.from_dict(meta["config"]), _weights_in(path))
    if path.is_file():
        return _vqgan_from(config or VQGANConfig(), path)
    raise CheckpointError(f"{path}: no such VQGAN file or folder")


def _vqgan_from(config: VQGANConfig, weights: Path) -> VQGAN:
    state = read_state_dict(weights)
    with torch.device("meta"):
        model = VQGAN(config)
    load_strict(model, state, str(weights))
    return model.eval()
