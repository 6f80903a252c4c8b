"""Loaders that return a built model rather than its files: tokenizers and the MaskGIT-VQGAN teacher.

Where a tokenizer's files are found is :mod:`titok.loading.tokenizers` (generators:
:meth:`titok.models.generator.model.Generator.from_pretrained`). The VQGAN is looked up here, beside
its loader: it has one published file and our own folders, no presets to resolve. This module
stands above the model classes it builds, so the model modules never import it at load time.

All loading is strict (:func:`titok.loading.weights.load_strict`).
"""

from __future__ import annotations

import os
from pathlib import Path

from titok.errors import CheckpointError, ConfigError
from titok.loading import hub
from titok.loading.lookup import read_config_json
from titok.loading.weights import build_and_load, weights_in
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN, VQGANConfig

#: Where the authors publish the MaskGIT-VQGAN used for proxy codes.
VQGAN_REPO, VQGAN_FILE = "fun-research/TiTok", "maskgit-vqgan-imagenet-f16-256.bin"


def load_tokenizer(name_or_path: str | os.PathLike[str], preset: str | None = None) -> TiTok:
    """Load a tokenizer from a local folder or file, a built-in name, a preset or a hub repo id."""
    return TiTok.from_pretrained(name_or_path, preset=preset)


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
        meta = read_config_json(path / "config.json") if (path / "config.json").is_file() else None
        if meta is None or meta.get("kind") != "vqgan":
            raise CheckpointError(f"{path}: not a VQGAN folder (config.json with kind 'vqgan' expected)")
        try:
            vqgan_config = VQGANConfig.from_dict(meta["config"])
        except ConfigError as exc:
            raise CheckpointError(f"{path / 'config.json'}: {exc}") from exc
        return _vqgan_from(vqgan_config, weights_in(path))
    if path.is_file():
        return _vqgan_from(config or VQGANConfig(), path)
    raise CheckpointError(f"{path}: no such VQGAN file or folder")


def _vqgan_from(config: VQGANConfig, weights: Path) -> VQGAN:
    return build_and_load(lambda: VQGAN(config), weights, str(weights))


__all__ = ["VQGAN_FILE", "VQGAN_REPO", "load_tokenizer", "load_vqgan"]
