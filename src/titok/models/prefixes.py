"""Prefix lengths of a 1D token sequence: the k of "the first k tokens"."""

from __future__ import annotations


def powers_of_two(num_tokens: int) -> list[int]:
    """1, 2, 4, ... below ``num_tokens``, then ``num_tokens`` itself: [1, 2, 4, ..., K].

    The lengths of a coarse-to-fine strip, of the ``pow2`` training distribution and of the
    evaluation curves.
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    out = [1]
    while out[-1] * 2 < num_tokens:
        out.append(out[-1] * 2)
    if out[-1] != num_tokens:
        out.append(num_tokens)
    return out
