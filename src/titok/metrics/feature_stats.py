"""Feature networks and the streaming accumulation of their statistics for FID and IS.

A *feature network* is any ``nn.Module`` with a ``name`` string whose forward maps images
(B, 3, H, W) in [0, 1] to ``(features [B, D], logits [B, C] or None)``. The FID Inception-v3
(:class:`titok.metrics.inception.FIDInceptionV3`) is one; smaller classifiers can plug in the same
way. Every result is keyed by the network's name, e.g. ``"FID[inception-v3-2015-12-05]"``, so
numbers from different networks are never mixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch

from titok.metrics.frechet import GaussianAccumulator, GaussianStats, fid_between
from titok.metrics.inception_score import inception_score

#: Tolerance on the [0, 1] input range (resampling can overshoot slightly).
_RANGE_TOLERANCE = 1e-3


@runtime_checkable
class FeatureNetwork(Protocol):
    """Images (B, 3, H, W) in [0, 1] -> (features [B, D], logits [B, C] or None), plus a ``name``."""

    name: str

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


def metric_key(metric: str, feature_network: str) -> str:
    """Result key of a metric computed with a feature network, e.g. ``"FID[inception-v3-2015-12-05]"``."""
    return f"{metric}[{feature_network}]"


@dataclass(frozen=True)
class FeatureSummary:
    """What a feature network saw of a set of images.

    Attributes:
        stats: Gaussian statistics of the features (mu [D], sigma [D, D]) and the network name.
        probs: softmax of the logits, float32 [N, C], or None if the network has no logits.
    """

    stats: GaussianStats
    probs: np.ndarray | None

    @property
    def feature_network(self) -> str:
        return self.stats.feature_network

    @property
    def count(self) -> int:
        return self.stats.count


class FeatureAccumulator:
    """Feed batches of images through a feature network and accumulate FID/IS statistics.

    Args:
        network: the feature network (put in eval mode; run without gradients).
        device: where the images are sent before the network (default: the network's device).
        keep_probs: keep the class probabilities for the Inception Score (N x C float32).
    """

    def __init__(
        self, network: torch.nn.Module, device: torch.device | str | None = None, keep_probs: bool = True
    ) -> None:
        if not isinstance(getattr(network, "name", None), str):
            raise TypeError("a feature network needs a `name` string attribute")
        self.network = network.eval()
        self.name: str = network.name
        if device is None:
            first = next(network.parameters(), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.keep_probs = keep_probs
        self._gaussian = GaussianAccumulator(self.name)
        self._probs: list[np.ndarray] = []
        self._has_logits: bool | None = None

    @property
    def count(self) -> int:
        """Number of images seen so far."""
        return self._gaussian.count

    @torch.no_grad()
    def update(self, images: torch.Tensor) -> None:
        """Add a batch of images (B, 3, H, W) with values in [0, 1]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {list(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}")
        low, high = float(images.min()), float(images.max())
        if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
            raise ValueError(f"expected images in [0, 1], got values in [{low:.3g}, {high:.3g}]")
        features, logits = self.network(images.to(self.device))
        self._gaussian.update(features)
        if self._has_logits is None:
            self._has_logits = logits is not None
        elif self._has_logits != (logits is not None):
            raise ValueError(f"feature network {self.name!r} returned logits for some batches only")
        if logits is not None and self.keep_probs:
            self._probs.append(torch.softmax(logits.double(), dim=1).float().cpu().numpy())

    def compute(self) -> FeatureSummary:
        """Statistics of all images added so far (at least 2)."""
        probs = np.concatenate(self._probs) if self._probs else None
        return FeatureSummary(stats=self._gaussian.compute(), probs=probs)


def generation_metrics(
    summary: FeatureSummary,
    reference: GaussianStats | None = None,
    is_splits: int = 10,
    fid_method: Literal["sqrtm", "eigh"] = "sqrtm",
) -> dict[str, float]:
    """FID against ``reference`` and Inception Score, keyed by the feature network's name.

    Returns:
        ``{"FID[<net>]": ..., "IS[<net>]": ..., "IS_std[<net>]": ...}``; FID only with a
        reference, IS only when the network gave logits (with at most one split per image).

    Raises:
        ValueError: the reference comes from another feature network.
    """
    name = summary.feature_network
    results: dict[str, float] = {}
    if reference is not None:
        results[metric_key("FID", name)] = fid_between(summary.stats, reference, method=fid_method)
    if summary.probs is not None:
        mean, std = inception_score(summary.probs, splits=min(is_splits, summary.count))
        results[metric_key("IS", name)] = mean
        results[metric_key("IS_std", name)] = std
    return results
