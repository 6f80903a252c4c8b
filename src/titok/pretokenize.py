"""Encode a dataset once into 1D token arrays, for generator training.

Output folder layout (format ``titok.pretokenized/1``):

* ``meta.json``: ``format``, ``model`` (what encoded it), ``num_tokens`` K, ``codebook_size``,
  ``image_size``, ``flip`` (whether flipped copies are stored), ``shards`` (file names in order),
  ``count`` (samples), ``complete`` (true once the pass finished) and ``data_state`` (the data
  stream's position after the last shard, for resuming).
* ``tokens-00000.npz``, ...: ``tokens`` (n, K) int32 code ids of the center-cropped image,
  ``tokens_flip`` (n, K) int32 of its horizontal mirror (when ``flip``), ``labels`` (n,) int64
  (-1 for unlabeled data), ``keys`` (n,) str.

Shards are written atomically (temporary file + rename) and ``meta.json`` is updated after each,
so an interrupted run resumes after its last complete shard without re-encoding it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from titok.data.loader import DataConfig, build_loader
from titok.errors import DataError
from titok.models.grid_tokenizer import GridTokenizer
from titok.models.titok import TiTok

FORMAT = "titok.pretokenized/1"


@dataclass
class TokenDataset:
    """Pretokenized tokens in memory: tokens (N, K), tokens_flip (N, K) or None, labels (N,)."""

    tokens: torch.Tensor
    tokens_flip: torch.Tensor | None
    labels: torch.Tensor
    meta: dict

    def __len__(self) -> int:
        return self.tokens.shape[0]


def _atomic_write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def pretokenize(
    model: TiTok | GridTokenizer,
    data: DataConfig,
    output: str | os.PathLike[str],
    model_name: str,
    shard_size: int = 10_000,
    flip: bool = True,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> Path:
    """Encode every image of ``data`` (one ordered pass, center crop) into token shards.

    ``data.batch_size`` images are encoded per forward pass; ``shard_size`` must be a multiple of
    it. Resumes a previous incomplete run in ``output`` made with the same model and settings.
    Returns ``output``.
    """
    if model.is_vae:
        raise DataError("pretokenization stores discrete tokens: a VAE-mode tokenizer has none")
    if shard_size % data.batch_size:
        raise DataError(f"shard_size {shard_size} must be a multiple of the batch size {data.batch_size}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    data = DataConfig(**{**data.__dict__, "endless": False, "augment": False, "image_size": model.image_size})
    loader = build_loader(data)
    settings = {
        "format": FORMAT,
        "model": model_name,
        "num_tokens": model.num_tokens,
        "codebook_size": model.codebook_size,
        "image_size": model.image_size,
        "flip": flip,
        "data": str(data.path),
        "shard_size": shard_size,
    }
    meta_path = out / "meta.json"
    meta = {**settings, "shards": [], "count": 0, "complete": False, "data_state": None}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        differs = [k for k in settings if old.get(k) != settings[k]]
        if differs:
            raise DataError(
                f"{out}: holds tokens made with other settings ({', '.join(differs)}); use a new folder"
            )
        if old.get("complete"):
            return out
        meta = old
        if meta["data_state"] is not None:
            loader.load_state_dict(meta["data_state"])
    total = loader.dataset.count_samples()
    buf: dict[str, list] = {"tokens": [], "tokens_flip": [], "labels": [], "keys": []}

    def flush() -> None:
        if not buf["keys"]:
            return
        name = f"tokens-{len(meta['shards']):05d}.npz"
        arrays = {
            "tokens": np.concatenate(buf["tokens"]).astype(np.int32),
            "labels": np.concatenate(buf["labels"]).astype(np.int64),
            "keys": np.array(buf["keys"]),
        }
        if flip:
            arrays["tokens_flip"] = np.concatenate(buf["tokens_flip"]).astype(np.int32)
        _atomic_savez(out / name, **arrays)
        meta["shards"].append(name)
        meta["count"] += len(buf["keys"])
        meta["data_state"] = loader.state_dict()
        _atomic_write_json(meta_path, meta)
        for v in buf.values():
            v.clear()

    with tqdm(
        total=total,
        initial=meta["count"],
        desc="pretokenize",
        unit="img",
        file=sys.stderr,
        disable=None if progress else True,
    ) as bar:
        for batch in loader:
            images = batch["image"]
            buf["tokens"].append(model.encode(images, batch_size=len(images), dtype=dtype).cpu().numpy())
            if flip:
                flipped = images.flip(-1)
                buf["tokens_flip"].append(
                    model.encode(flipped, batch_size=len(images), dtype=dtype).cpu().numpy()
                )
            buf["labels"].append(batch["label"].numpy())
            buf["keys"].extend(batch["key"])
            bar.update(len(images))
            if len(buf["keys"]) >= shard_size:
                flush()
        flush()
    meta["complete"] = True
    meta["skipped"] = dict(loader.skipped)
    _atomic_write_json(meta_path, meta)
    return out


def load_tokens(folder: str | os.PathLike[str]) -> TokenDataset:
    """Read a pretokenized folder into memory."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{folder}: not a pretokenized folder (no meta.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: expected format {FORMAT!r}, got {meta.get('format')!r}")
    if not meta.get("complete"):
        raise DataError(f"{folder}: pretokenization did not finish; run it again to resume")
    parts = [np.load(folder / name) for name in meta["shards"]]
    if not parts:
        raise DataError(f"{folder}: holds no tokens")
    tokens = torch.from_numpy(np.concatenate([p["tokens"] for p in parts])).long()
    flips = (
        torch.from_numpy(np.concatenate([p["tokens_flip"] for p in parts])).long() if meta["flip"] else None
    )
    labels = torch.from_numpy(np.concatenate([p["labels"] for p in parts])).long()
    return TokenDataset(tokens, flips, labels, meta)
