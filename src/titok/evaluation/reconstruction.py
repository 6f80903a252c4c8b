"""Reconstruction quality of a tokenizer over a split of a dataset: rFID, PSNR, SSIM, codebook usage.

Command line::

    titok eval reconstruction --model M --data D [--split val --holdout 500] [--max-images N]
        [--feature-net inception|inception-tf|WEIGHTS.pth|CLASSIFIER_DIR] [--json-out FILE]

Every image of the split is encoded, quantised and decoded in batches (center crop at the
model's resolution, no augmentation). Reported (keys of the result dict):

* ``rFID[<net>]``: Fréchet distance between the feature-network statistics of the
  reconstructions and those of the original images of the same split (or of given reference
  statistics), labelled with the feature network's name;
* ``PSNR`` (dB) and ``SSIM``: means over images of the per-image values
  (:mod:`titok.metrics.image_quality`, RGB, data range 1);
* ``codebook_used_fraction``, ``codebook_perplexity``, ``codebook_entropy_bits``: usage of the
  codebook by all tokens of the split (VQ models only);
* ``seam_score`` and ``seam_score_originals``: how much the decoder's block grid shows in the
  reconstructions, and the same measure of the originals (:mod:`titok.metrics.seams`);
* ``pattern_score`` and ``pattern_score_originals``: how much one texture repeated in every
  block shows (:mod:`titok.metrics.pattern`; the originals' is the noise floor);
* ``lattice_score`` and ``lattice_score_originals``: the periodicity of the detail at the block
  side, which also sees a lattice whose sign follows the image (about 0 for natural images);
* ``num_images``.

The tokenizer is a TiTok or a 2D VQGAN seen as a token sequence
(:class:`~titok.models.grid_tokenizer.GridTokenizer`). A stage-1 TiTok (proxy-code head) is
decoded through its teacher VQGAN (``teacher``).
:class:`DataSplit` says which images of a data spec are used; the same selection serves the
reference statistics, the linear probe and the classifier training.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from tqdm import tqdm

from titok.data import DataConfig, StreamLoader, build_loader
from titok.errors import ConfigError, DataError, TitokError
from titok.metrics import (
    FeatureAccumulator,
    GaussianStats,
    fid_between,
    metric_key,
    psnr,
    ssim,
    token_counts,
    usage_from_counts,
)
from titok.metrics.pattern import LatticeScore, PatternScore
from titok.metrics.seams import SeamScore
from titok.models.grid_tokenizer import GridTokenizer
from titok.models.titok import TiTok
from titok.models.vqgan import VQGAN

#: A tokenizer the evaluations accept: 1D TiTok or 2D VQGAN grid.
Tokenizer = TiTok | GridTokenizer

SplitName = Literal["all", "train", "val"]


@dataclass
class DataSplit:
    """Which images of a data spec to read, in a fixed order.

    Attributes:
        path: data spec (tar shards, shard folder, ImageFolder tree, image list, image folder).
        split: ``"all"`` (every image), ``"train"`` (all but the holdout) or ``"val"`` (the holdout).
        holdout: number of held-out images for ``"train"``/``"val"`` (chosen by a hash of the keys
            and ``holdout_seed``, identical across runs; see :mod:`titok.data.stream`).
        holdout_seed: seed of the holdout choice.
        max_images: keep the first N images of the split (None: all).
        num_workers: DataLoader worker processes.
    """

    path: str | list[str]
    split: SplitName = "all"
    holdout: int = 500
    holdout_seed: int = 0
    max_images: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.split not in ("all", "train", "val"):
            raise ConfigError(f"split: expected 'all', 'train' or 'val', got {self.split!r}")
        if self.split != "all" and self.holdout <= 0:
            raise ConfigError(f"split {self.split!r} needs holdout > 0, got {self.holdout}")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError(f"max_images must be >= 1, got {self.max_images}")

    def data_config(self, image_size: int, batch_size: int, require_labels: bool = False) -> DataConfig:
        """One ordered pass, center crops at ``image_size`` (no augmentation)."""
        return DataConfig(
            path=self.path,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=self.num_workers,
            endless=False,
            augment=False,
            holdout=0 if self.split == "all" else self.holdout,
            split="val" if self.split == "val" else "train",
            holdout_seed=self.holdout_seed,
            max_samples=self.max_images,
            require_labels=require_labels,
        )

    def loader(self, image_size: int, batch_size: int, require_labels: bool = False) -> StreamLoader:
        """Batched loader of ``{"image": (B, 3, S, S) in [0, 1], "label": (B,), "key": [B]}``."""
        return build_loader(self.data_config(image_size, batch_size, require_labels))

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (for reports and cache keys)."""
        info = asdict(self)
        info.pop("num_workers")
        if self.split == "all":
            info.pop("holdout")
            info.pop("holdout_seed")
        return info


def split_batches(
    split: DataSplit,
    image_size: int,
    batch_size: int,
    progress: bool = True,
    desc: str = "images",
    require_labels: bool = False,
) -> Iterator[dict[str, Any]]:
    """Batches of a split with a progress bar (on stderr) counting images."""
    loader = split.loader(image_size, batch_size, require_labels)
    total = loader.dataset.count_samples() if progress else None
    seen = 0
    with tqdm(total=total, desc=desc, unit="img", disable=None if progress else True, file=sys.stderr) as bar:
        for batch in loader:
            seen += len(batch["key"])
            bar.update(len(batch["key"]))
            yield batch
    if seen == 0:
        raise DataError(f"{split.path}: the split holds no readable images")


def _is_stage1(model: Tokenizer) -> bool:
    return isinstance(model, TiTok) and model.config.decoder_head == "proxy"


def check_pixel_model(model: Tokenizer, teacher: VQGAN | None) -> None:
    """Refuse a stage-1 model without its teacher VQGAN (it cannot produce pixels alone)."""
    if _is_stage1(model) and teacher is None:
        raise TitokError(
            "this is a stage-1 model (it predicts proxy codes, not pixels): pass its teacher VQGAN "
            "(--teacher PATH, or 'maskgit-vqgan' for the published one) to decode to images"
        )


@torch.inference_mode()
def decode_to_images(
    model: Tokenizer,
    tokens: torch.Tensor,
    dtype: torch.dtype | None = None,
    teacher: VQGAN | None = None,
    force_prefix: bool = False,
) -> torch.Tensor:
    """Tokens [B, K] (VQ ids) or latents [B, K, C] (VAE) -> images (B, 3, H, W) in [0, 1], float32.

    A stage-1 model's proxy codes are decoded by ``teacher``. A TiTok's tokens may be a prefix
    [B, k] (``force_prefix``: also for a model not trained on prefixes).
    """
    extra = {"force_prefix": True} if force_prefix else {}
    if _is_stage1(model):
        check_pixel_model(model, teacher)
        assert teacher is not None and isinstance(model, TiTok)
        codes = model.decode_proxy_codes(tokens, **extra)
        device = next(teacher.parameters()).device
        low_precision = dtype is not None and dtype != torch.float32
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=low_precision):
            return teacher.decode(codes.to(device)).float().clamp(0.0, 1.0)
    return model.decode(tokens, batch_size=max(len(tokens), 1), dtype=dtype, **extra)


def _block_side(model: Tokenizer) -> int | None:
    """Side of the blocks the model's decoder writes (TiTok: its patch; VQGAN: its downsampling)."""
    config = getattr(model, "config", None)
    side = getattr(config, "patch_size", None) or getattr(config, "downsample_factor", None)
    return int(side) if side and side > 1 else None


def evaluate_reconstruction(
    model: Tokenizer,
    split: DataSplit,
    feature_network: torch.nn.Module | None,
    *,
    batch_size: int = 32,
    dtype: torch.dtype | None = None,
    teacher: VQGAN | None = None,
    reference: GaussianStats | None = None,
    fid_method: Literal["sqrtm", "eigh"] = "sqrtm",
    progress: bool = True,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    num_tokens: int | None = None,
    force_prefix: bool = False,
) -> dict[str, float]:
    """Reconstruction metrics of ``model`` over ``split`` (keys in the module docstring).

    Args:
        model: the tokenizer (on its device, eval mode).
        split: the images.
        feature_network: network of the rFID; None skips rFID.
        batch_size: images per forward pass.
        dtype: autocast dtype of the tokenizer (the feature network runs in float32).
        teacher: the VQGAN decoding a stage-1 model's proxy codes.
        reference: statistics the reconstructions are compared with instead of the originals'
            (they must come from ``feature_network``).
        fid_method: ``"sqrtm"`` (standard) or ``"eigh"`` (faster), see :func:`titok.metrics.frechet_distance`.
        progress: show a progress bar.
        num_tokens: TiTok trained on prefixes: decode the first k tokens only (None: all).
        force_prefix: allow ``num_tokens`` < K for a TiTok not trained on prefixes (a control).
        on_batch: called with ``(originals, reconstructions)`` of every batch (e.g. for grids).

    Raises:
        TitokError: a stage-1 model without teacher, or statistics of another feature network.
    """
    check_pixel_model(model, teacher)
    if (
        reference is not None
        and feature_network is not None
        and reference.feature_network != feature_network.name
    ):
        raise DataError(
            f"reference statistics are of feature network {reference.feature_network!r}, "
            f"the rFID uses {feature_network.name!r}"
        )
    model.eval()
    original_features = recon_features = None
    if feature_network is not None:
        recon_features = FeatureAccumulator(feature_network, keep_probs=False)
        if reference is None:
            original_features = FeatureAccumulator(feature_network, keep_probs=False)
    counts = None if model.is_vae else torch.zeros(model.codebook_size, dtype=torch.long)
    psnr_sum = ssim_sum = 0.0
    psnr_finite, count = 0, 0
    patch = _block_side(model)
    # name -> (reconstructions' score, originals' score); none for a model without a block grid.
    block_scores = {
        name: (kind(patch), kind(patch))
        for name, kind in (
            ("seam_score", SeamScore),
            ("pattern_score", PatternScore),
            ("lattice_score", LatticeScore),
        )
        if patch
    }
    for batch in split_batches(split, model.image_size, batch_size, progress, desc="reconstruction"):
        images = batch["image"]
        if num_tokens is None:
            tokens = model.encode(images.to(model.device), batch_size=len(images), dtype=dtype)
        else:
            tokens = model.encode(
                images.to(model.device),
                batch_size=len(images),
                dtype=dtype,
                num_tokens=num_tokens,
                force_prefix=force_prefix,
            )
        recon = decode_to_images(model, tokens, dtype, teacher, force_prefix).cpu()
        if counts is not None:
            counts += token_counts(tokens, model.codebook_size)
        values = psnr(recon, images)
        finite = torch.isfinite(values)  # identical images have infinite PSNR: left out of the mean
        psnr_sum += float(values[finite].sum())
        psnr_finite += int(finite.sum())
        ssim_sum += float(ssim(recon, images).sum())
        count += len(images)
        for of_recon, of_originals in block_scores.values():
            of_recon.update(recon)
            of_originals.update(images)
        if recon_features is not None:
            recon_features.update(recon)
        if original_features is not None:
            original_features.update(images)
        if on_batch is not None:
            on_batch(images, recon)

    results: dict[str, float] = {"num_images": float(count)}
    if recon_features is not None and count < 2:
        raise DataError(f"{split.path}: rFID needs at least 2 images, the split has {count}")
    if recon_features is not None and feature_network is not None:
        target = reference if reference is not None else original_features.compute().stats  # type: ignore[union-attr]
        results[metric_key("rFID", feature_network.name)] = fid_between(
            recon_features.compute().stats, target, method=fid_method
        )
    results["PSNR"] = psnr_sum / psnr_finite if psnr_finite else math.inf
    results["SSIM"] = ssim_sum / count
    for name, (of_recon, of_originals) in block_scores.items():
        results[name] = of_recon.compute()
        results[f"{name}_originals"] = of_originals.compute()
    if counts is not None:
        usage = usage_from_counts(counts)
        results["codebook_used_fraction"] = usage["used_fraction"]
        results["codebook_perplexity"] = usage["perplexity"]
        results["codebook_entropy_bits"] = usage["entropy_bits"]
    return results


__all__ = [
    "DataSplit",
    "Tokenizer",
    "check_pixel_model",
    "decode_to_images",
    "evaluate_reconstruction",
    "split_batches",
]
