"""Measurements of the reproduction: reconstruction quality, linear probes, generation.

Every tokenizer (1D TiTok or 2D :class:`~titok.models.grid_tokenizer.GridTokenizer`) is measured
the same way on the same held-out images; FID-like figures use the run's own classifier as the
feature network and are labelled with its name.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from titok.errors import TitokError
from titok.evaluation.linear_probe import LinearProbeConfig, linear_probe, pool_tokens
from titok.evaluation.reconstruction import DataSplit, Tokenizer, evaluate_reconstruction, split_batches
from titok.evaluation.token_probe import token_features
from titok.metrics.feature_stats import FeatureAccumulator, FeatureSummary, generation_metrics, metric_key


def _check_size(tokenizer: Tokenizer, image_size: int) -> None:
    if tokenizer.image_size != image_size:
        raise TitokError(f"tokenizer works at {tokenizer.image_size} px, the run at {image_size}")


@torch.inference_mode()
def real_summary(
    network: torch.nn.Module, split: DataSplit, image_size: int, batch_size: int = 50
) -> FeatureSummary:
    """Feature statistics of the real images of ``split`` (the FID reference)."""
    acc = FeatureAccumulator(network)
    for batch in split_batches(split, image_size, batch_size, progress=False):
        acc.update(batch["image"])
    return acc.compute()


def reconstruction_metrics(
    tokenizer: Tokenizer,
    split: DataSplit,
    network: torch.nn.Module,
    reference: FeatureSummary,
    image_size: int,
    batch_size: int = 50,
    keep: int = 8,
    num_tokens: int | None = None,
    force_prefix: bool = False,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """PSNR, SSIM, FID[net] against ``reference`` and codebook usage over ``split`` (from the
    first ``num_tokens`` tokens of a TiTok trained on prefixes; None: all).

    Computed by :func:`~titok.evaluation.reconstruction.evaluate_reconstruction`, the same
    procedure as ``titok eval reconstruction``.

    Returns:
        ``(metrics, originals, reconstructions)`` with the first ``keep`` images of each
        (for grids).
    """
    _check_size(tokenizer, image_size)
    first: list[torch.Tensor] = []
    first_rec: list[torch.Tensor] = []

    def grab(images: torch.Tensor, recon: torch.Tensor) -> None:
        if sum(len(x) for x in first) < keep:
            first.append(images)
            first_rec.append(recon)

    out = evaluate_reconstruction(
        tokenizer,
        split,
        network,
        batch_size=batch_size,
        reference=reference.stats,
        progress=False,
        on_batch=grab,
        num_tokens=num_tokens,
        force_prefix=force_prefix,
    )
    metrics = {
        "PSNR": out["PSNR"],
        "SSIM": out["SSIM"],
        metric_key("rFID", network.name): out[metric_key("rFID", network.name)],
        "codebook_used": out["codebook_used_fraction"],
        "codebook_perplexity": out["codebook_perplexity"],
        "num_images": out["num_images"],
    }
    # the block-grid and repeated-texture scores of a pixel decoder, and the originals' (for scale)
    for key in ("seam_score", "seam_score_originals", "pattern_score", "pattern_score_originals"):
        if key in out:
            metrics[key] = out[key]
    return metrics, torch.cat(first)[:keep], torch.cat(first_rec)[:keep]


def probe_metrics(
    tokenizer: Tokenizer,
    train: DataSplit,
    val: DataSplit,
    image_size: int,
    num_classes: int,
    num_tokens: int | None = None,
    features: tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, float]:
    """Linear-probe top-1 on the frozen tokens (the first ``num_tokens`` of them; None: all),
    mean-pooled and concatenated. ``features``: the (train, val) :func:`token_features`, if
    already read."""
    _check_size(tokenizer, image_size)
    if features is None:
        features = (
            token_features(tokenizer, train, batch_size=50, progress=False),
            token_features(tokenizer, val, batch_size=50, progress=False),
        )
    (train_x, train_y), (val_x, val_y) = features
    train_x, val_x = train_x[:, :num_tokens], val_x[:, :num_tokens]
    results: dict[str, float] = {}
    config = LinearProbeConfig(epochs=100, batch_size=256, optimizer="adamw", lr=1e-3, weight_decay=1e-4)
    for pool in ("mean", "concat"):
        out = linear_probe(
            pool_tokens(train_x, pool), train_y, pool_tokens(val_x, pool), val_y, config, num_classes
        )
        results[f"top1_{pool}"] = out.top1
        results[f"train_top1_{pool}"] = out.train_top1
    results["feature_dim"] = float(train_x.shape[-1])
    results["num_train_images"] = float(len(train_y))
    results["num_val_images"] = float(len(val_y))
    return results


@torch.inference_mode()
def generate(
    generator: torch.nn.Module,
    tokenizer: Tokenizer,
    labels: torch.Tensor,
    batch_size: int,
    seed: int = 0,
    num_tokens: int | None = None,
) -> torch.Tensor:
    """Images (N, 3, S, S) in [0, 1] for ``labels`` [N], batch by batch, deterministic for ``seed``
    (of the first ``num_tokens`` tokens; None: all)."""
    out = []
    for i, chunk in enumerate(labels.split(batch_size)):
        extra = {} if num_tokens is None else {"num_tokens": num_tokens}
        tokens = generator.generate(chunk, seed=seed + i, **extra)
        out.append(tokenizer.decode(tokens, batch_size=batch_size))
    return torch.cat(out)


def generation_speed(
    generator: torch.nn.Module,
    tokenizer: Tokenizer,
    num_classes: int,
    batch_size: int,
    runs: int,
    num_tokens: int | None = None,
) -> dict[str, float]:
    """Images/s of sampling + decoding one batch (one warm-up run, then the median of ``runs``)."""
    labels = torch.arange(batch_size) % num_classes
    generate(generator, tokenizer, labels, batch_size, num_tokens=num_tokens)
    times = []
    for r in range(runs):
        start = time.perf_counter()
        generate(generator, tokenizer, labels, batch_size, seed=r, num_tokens=num_tokens)
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    return {
        "images_per_second": batch_size / median,
        "seconds_per_batch": median,
        "batch_size": float(batch_size),
    }


def generation_metrics_for(
    generator: torch.nn.Module,
    tokenizer: Tokenizer,
    network: torch.nn.Module,
    reference: FeatureSummary,
    num: int,
    num_classes: int,
    batch_size: int = 50,
    seed: int = 0,
    num_tokens: int | None = None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """gFID[net], IS[net] and class agreement of ``num`` class-balanced samples (sampled from
    ``seed``); also returns the samples.

    Class agreement: the share of samples that ``network`` assigns to the class they were generated
    for, read from the same forward pass as the IS (NaN for a network without logits).
    """
    labels = torch.arange(num) % num_classes
    images = generate(generator, tokenizer, labels, batch_size, seed, num_tokens)
    acc = FeatureAccumulator(network)
    for chunk in images.split(batch_size):
        acc.update(chunk)
    summary = acc.compute()
    metrics = generation_metrics(summary, reference.stats, is_splits=min(10, max(1, num // 50)))
    name = network.name
    out = {
        f"gFID[{name}]": metrics[metric_key("FID", name)],
        f"IS[{name}]": metrics.get(metric_key("IS", name), float("nan")),
        "num_images": float(num),
        "class_agreement": float("nan")
        if summary.probs is None
        else float((summary.probs.argmax(1) == labels.numpy()).mean()),
    }
    return out, images


@torch.inference_mode()
def class_agreement(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` (N, 3, H, W) that the classifier ``network`` assigns to their ``labels`` (N,)."""
    hits = 0
    for chunk, want in zip(images.split(100), labels.split(100), strict=True):
        hits += int((network(chunk)[1].argmax(1) == want).sum())
    return hits / len(labels)


def real_class_agreement(network: torch.nn.Module, split: DataSplit, image_size: int) -> float:
    """:func:`class_agreement` of the real labelled images of ``split`` (the ceiling of generated ones)."""
    images, labels = [], []
    for batch in split_batches(split, image_size, 100, progress=False, require_labels=True):
        images.append(batch["image"])
        labels.append(batch["label"])
    return class_agreement(network, torch.cat(images), torch.cat(labels))
