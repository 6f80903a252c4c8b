"""Linear probing of a frozen tokenizer: its pre-quantisation tokens as features.

``token_features`` reads a labelled split through a tokenizer's encoder (TiTok: the K latent
tokens; 2D VQGAN: the encoder grid as a sequence) and ``probe_tokenizer`` fits and scores a
linear classifier on them (:func:`titok.evaluation.linear_probe.linear_probe`).
"""

from __future__ import annotations

import torch

from titok.errors import DataError
from titok.evaluation.linear_probe import LinearProbeConfig, PoolMode, linear_probe, pool_tokens
from titok.evaluation.reconstruction import DataSplit, Tokenizer, split_batches
from titok.models.quantizers import DiagonalGaussian


@torch.inference_mode()
def token_features(
    model: Tokenizer,
    split: DataSplit,
    batch_size: int = 32,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-quantisation latent tokens of a labelled split: features float32 [N, K, C], labels [N].

    For a VAE the posterior mean is taken.
    """
    low_precision = dtype is not None and dtype != torch.float32
    features, labels = [], []
    for batch in split_batches(split, model.image_size, batch_size, progress, "features", True):
        if (batch["label"] < 0).any():
            raise DataError(f"{split.path}: the linear probe needs labelled images (found unlabelled ones)")
        with torch.autocast(model.device.type, dtype=dtype or torch.float32, enabled=low_precision):
            latents = model.encode_latents(batch["image"].to(model.device))
        if model.is_vae:
            latents = DiagonalGaussian.split(latents)[0]
        features.append(latents.float().cpu())
        labels.append(batch["label"])
    return torch.cat(features), torch.cat(labels)


def probe_tokenizer(
    model: Tokenizer,
    train_split: DataSplit,
    val_split: DataSplit,
    pool: PoolMode = "mean",
    config: LinearProbeConfig | None = None,
    batch_size: int = 32,
    dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Linear-probe top-1 of a frozen tokenizer's latent tokens: train on one split, score the other."""
    train_x, train_y = token_features(model, train_split, batch_size, dtype, progress)
    val_x, val_y = token_features(model, val_split, batch_size, dtype, progress)
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    result = linear_probe(
        pool_tokens(train_x, pool), train_y, pool_tokens(val_x, pool), val_y, config, num_classes
    )
    return {
        "top1": result.top1,
        "train_top1": result.train_top1,
        "num_train_images": float(len(train_y)),
        "num_val_images": float(len(val_y)),
    }


__all__ = ["probe_tokenizer", "token_features"]
