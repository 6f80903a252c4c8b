"""Reference statistics of a dataset for a feature network: computed once, cached, checked on use.

Command line::

    titok eval reference-stats --data D [--split all] [--image-size 256] [--feature-net NET] --out FILE.npz

(``titok eval generation --ref-data D`` computes and caches them on the fly.)

A statistics file is an ``.npz`` with ``mu`` [D], ``sigma`` [D, D], ``count``, ``feature_network``
(the network's name) and ``feature_network_fingerprint`` (a hash of its weights, see
:func:`titok.evaluation.feature_networks.network_fingerprint`); it is readable by
:func:`titok.metrics.load_reference_stats`. Using a file with another network is an error: a
different name always, a different fingerprint when the file has one (files without it, such as
the ADM evaluator's reference batches, are trusted to match the name given).

Images are center-cropped to ``image_size`` (that of the images they will be compared with, e.g.
the tokenizer's resolution) before the feature network, which resizes them to its own input size.
The cache (``$TITOK_CACHE_DIR/reference-stats``, default ``~/.cache/titok/reference-stats``) is
keyed by the data spec (absolute paths and their modification times), the split, the image size
and the network's name and fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from titok.errors import DataError
from titok.evaluation.feature_networks import network_fingerprint
from titok.evaluation.reconstruction import DataSplit, split_batches
from titok.metrics import FeatureAccumulator, GaussianStats, load_reference_stats

CACHE_ENV = "TITOK_CACHE_DIR"
FINGERPRINT_KEY = "feature_network_fingerprint"


def default_cache_dir() -> Path:
    """``$TITOK_CACHE_DIR/reference-stats`` or ``~/.cache/titok/reference-stats``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "titok"
    return base / "reference-stats"


def compute_reference_stats(
    split: DataSplit,
    network: torch.nn.Module,
    image_size: int,
    batch_size: int = 64,
    progress: bool = True,
) -> GaussianStats:
    """Feature statistics of the images of ``split`` (center crops of side ``image_size``)."""
    accumulator = FeatureAccumulator(network, keep_probs=False)
    for batch in split_batches(split, image_size, batch_size, progress, desc="reference stats"):
        accumulator.update(batch["image"])
    if accumulator.count < 2:
        raise DataError(f"{split.path}: reference statistics need at least 2 images, got {accumulator.count}")
    return accumulator.compute().stats


def save_stats(stats: GaussianStats, path: str | os.PathLike[str], fingerprint: str | None = None) -> Path:
    """Write statistics (and the network fingerprint, if given) to ``path`` (``.npz``), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "mu": np.asarray(stats.mu, np.float64),
        "sigma": np.asarray(stats.sigma, np.float64),
        "count": np.int64(stats.count),
        "feature_network": np.str_(stats.feature_network),
    }
    if fingerprint is not None:
        arrays[FINGERPRINT_KEY] = np.str_(fingerprint)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(path)
    return path


def load_stats_for(path: str | os.PathLike[str], network: torch.nn.Module) -> GaussianStats:
    """Read statistics for use with ``network``.

    Raises:
        DataError: unreadable file, statistics of another network name, or (when the file records
            it) of other weights under the same name.
    """
    stats = load_reference_stats(path, feature_network=network.name)
    with np.load(path, allow_pickle=False) as archive:
        stored = str(archive[FINGERPRINT_KEY]) if FINGERPRINT_KEY in archive.files else None
    if stored is not None and stored != network_fingerprint(network):
        raise DataError(
            f"{path}: statistics of feature network {network.name!r} computed with other weights "
            f"(fingerprint {stored}, this network's is {network_fingerprint(network)}); recompute them"
        )
    return stats


def _path_signature(spec: str) -> dict[str, object]:
    path = Path(spec).expanduser()
    if path.exists():
        return {"path": str(path.resolve()), "mtime_ns": path.stat().st_mtime_ns}
    return {"path": spec}


def cache_path(
    split: DataSplit,
    network: torch.nn.Module,
    image_size: int,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where the statistics of ``split`` at ``image_size`` for ``network`` are cached."""
    specs = split.path if isinstance(split.path, list) else [split.path]
    key = {
        "data": [_path_signature(str(s)) for s in specs],
        "split": split.describe() | {"path": None},
        "image_size": image_size,
        "network": network.name,
        "fingerprint": network_fingerprint(network),
    }
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8).hexdigest()
    stem = Path(str(specs[0]).rstrip("/")).stem or "data"
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{network.name}-{stem}-{split.split}-{image_size}px-{digest}.npz"


def cached_reference_stats(
    split: DataSplit,
    network: torch.nn.Module,
    image_size: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    recompute: bool = False,
) -> tuple[GaussianStats, Path, bool]:
    """Statistics of ``split`` for ``network``, from the cache when present.

    Returns:
        ``(stats, cache file, reused)``; ``reused`` is False when they were just computed.
    """
    path = cache_path(split, network, image_size, cache_dir)
    if path.is_file() and not recompute:
        return load_stats_for(path, network), path, True
    stats = compute_reference_stats(split, network, image_size, batch_size, progress)
    save_stats(stats, path, network_fingerprint(network))
    return stats, path, False


__all__ = [
    "CACHE_ENV",
    "FINGERPRINT_KEY",
    "cache_path",
    "cached_reference_stats",
    "compute_reference_stats",
    "default_cache_dir",
    "load_stats_for",
    "save_stats",
]
