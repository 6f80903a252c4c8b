"""Codebook usage of a quantizer: fraction of codes used and perplexity of the code distribution.

Counts can be accumulated over many batches with :func:`token_counts` (summing the results)
and scored once with :func:`usage_from_counts`; :func:`codebook_usage` does both for one set
of tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def token_counts(tokens: torch.Tensor | np.ndarray, codebook_size: int) -> torch.Tensor:
    """How often each code occurs in ``tokens`` (any shape, integer ids). Returns int64 [codebook_size]."""
    ids = torch.as_tensor(tokens).reshape(-1)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"tokens must be integer ids, got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= codebook_size):
        raise ValueError(
            f"token ids must lie in [0, {codebook_size}), got range [{int(ids.min())}, {int(ids.max())}]"
        )
    return torch.bincount(ids.long().cpu(), minlength=codebook_size)


def usage_from_counts(counts: torch.Tensor | np.ndarray) -> dict[str, float]:
    """Usage statistics of code counts [K].

    Returns:
        ``used_fraction``: share of the K codes that occur at least once;
        ``perplexity``: exp of the entropy (nats) of the code frequencies, between 1 (one code)
        and K (all codes equally often);
        ``entropy_bits``: that entropy in bits, log2(perplexity).
    """
    counts = torch.as_tensor(counts).double().reshape(-1)
    total = counts.sum()
    if total <= 0:
        raise ValueError("no tokens counted")
    probs = counts[counts > 0] / total
    entropy = -(probs * probs.log()).sum()
    return {
        "used_fraction": float((counts > 0).double().mean()),
        "perplexity": float(entropy.exp()),
        "entropy_bits": float(entropy / math.log(2)),
    }


def codebook_usage(tokens: torch.Tensor | np.ndarray, codebook_size: int) -> dict[str, float]:
    """``used_fraction``, ``perplexity`` and ``entropy_bits`` of the codes in ``tokens`` (see :func:`usage_from_counts`)."""
    return usage_from_counts(token_counts(tokens, codebook_size))
