"""Inception Score from class probabilities.

IS = exp(E_x KL(p(y|x) || p(y))), computed on ``splits`` equal consecutive chunks of the
samples; the mean and standard deviation over chunks are reported, as in the original
implementation (samples beyond ``splits * (N // splits)`` are left out).
"""

from __future__ import annotations

import numpy as np
import torch


def inception_score(probs: torch.Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and standard deviation of the Inception Score over ``splits`` chunks.

    Args:
        probs: class probabilities p(y|x), shape [N, C], rows summing to 1.
        splits: number of chunks (N must be at least ``splits``).

    Returns:
        (mean, std): 1 for identical predictions, up to C for confident predictions spread
        evenly over the C classes.
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().to("cpu", torch.float64).numpy()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape [N, C], got {list(probs.shape)}")
    if splits < 1 or probs.shape[0] < splits:
        raise ValueError(f"need at least splits={splits} >= 1 samples, got {probs.shape[0]}")
    if probs.min() < 0 or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs must be non-negative with rows summing to 1 (apply softmax to logits)")
    chunk = probs.shape[0] // splits
    scores = []
    for k in range(splits):
        part = probs[k * chunk : (k + 1) * chunk]
        marginal = part.mean(axis=0, keepdims=True)
        # KL(p(y|x) || p(y)) per sample, with 0 log 0 = 0 (the marginal is > 0 wherever p is).
        safe_part, safe_marginal = np.where(part > 0, part, 1.0), np.where(part > 0, marginal, 1.0)
        kl = (part * (np.log(safe_part) - np.log(safe_marginal))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
